"""ONNX Runtime inference engine: reports with per-sentence grounding, phrase grounding."""
