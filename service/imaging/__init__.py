"""Image ingestion: DICOM / PNG / JPEG bytes -> grey float image -> model input (pure)."""
