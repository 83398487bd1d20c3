"""Parts of ``python -m model_export.evaluate``: the image-folder AUROC and the summary."""
