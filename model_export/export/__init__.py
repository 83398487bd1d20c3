"""ONNX export of SS-ACL: thin wrapper modules, graph export, parity checks (CLI: export_onnx)."""
