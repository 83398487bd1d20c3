"""SS-ACL inference microservice (FastAPI + ONNX Runtime; no torch)."""
