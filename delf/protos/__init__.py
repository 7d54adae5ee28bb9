"""Generated protobuf modules (``delf.protos.<name>_pb2``); sources in ``protos/``."""
