"""What every layer may use, and which imports no other part of the project: what a media ID may
be (``media_ids``) and its Dagster partitions (``partitions``), events on the wire (``wire``,
the KlioMessage protobuf) and the run tags that change a run (``run_tags``)."""
