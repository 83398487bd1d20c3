"""Training of SS-ACL (entry point: ``python -m model_export.train``)."""
