"""The child process of ``pipelines.isolation.ChildCaller``: receives ``(fn, kwargs)``, calls it and
sends back ``(True, value)`` or ``(False, exception)``, until its parent closes the socket."""

import pickle
import sys
from multiprocessing.connection import Connection


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def serve(connection: Connection) -> None:
    while True:
        try:
            fn, kwargs = pickle.loads(connection.recv_bytes())
        except (EOFError, OSError):  # the parent is gone or done with us
            return
        try:
            reply = (True, fn(**kwargs))
        except Exception as e:
            reply = (False, _picklable(e))
        connection.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
