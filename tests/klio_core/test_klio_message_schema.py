import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_generated_module_is_up_to_date_with_the_proto(tmp_path):
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "gen_proto.sh"), str(tmp_path)], check=True)
    with open(tmp_path / "klio_message_pb2.py") as fresh, \
            open(os.path.join(ROOT, "klio_core", "klio_message_pb2.py")) as committed:
        assert fresh.read() == committed.read(), "run scripts/gen_proto.sh and commit the result"
