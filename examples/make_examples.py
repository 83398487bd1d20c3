"""Regenerate the example images: ``chest_phantom.png`` and ``chest_phantom.dcm`` (synthetic).

    .venv/bin/python examples/make_examples.py [--out examples]

Both are a phantom from ``model_export.data.phantom`` (seed 7): no patient data. The PNG is
512 x 512, 8-bit grey; the DICOM is the same picture reduced to 256 x 256 (2 x 2 means),
uncompressed 8-bit MONOCHROME2, a Secondary Capture with Conversion Type ``SYN`` (synthetic
image) whose patient and study attributes say plainly that they are fake. UIDs derive from
fixed strings, so a rerun writes the same files. Needs the ``train`` extra (scipy).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from model_export.data.phantom import generate_phantom

SEED = 7  # phantom seed (findings, anatomy and noise)
SIZE = 512  # PNG side, pixels
DICOM_SIDE = 256  # DICOM side, pixels: the PNG's 2 x 2 means
HERE = Path(__file__).resolve().parent


def phantom_pixels(seed: int = SEED, size: int = SIZE) -> np.ndarray:
    """(size, size) uint8 phantom radiograph, white = dense."""
    image = generate_phantom(seed, size).image
    pixels: np.ndarray = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return pixels


def halve(pixels: np.ndarray) -> np.ndarray:
    """(2H, 2W) uint8 -> (H, W) uint8 means of 2 x 2 blocks, rounded."""
    h, w = pixels.shape[0] // 2, pixels.shape[1] // 2
    blocks = pixels[: 2 * h, : 2 * w].reshape(h, 2, w, 2).astype(np.float64)
    means: np.ndarray = (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)
    return means


def _uid(what: str) -> UID:
    """A UID derived from fixed strings (the same on every run)."""
    return generate_uid(entropy_srcs=["ssacl-cxr examples", f"phantom {SEED}", what])


def _identity(ds: Dataset) -> None:
    """Patient, study and series attributes: all fake, and saying so."""
    ds.PatientName = "SYNTHETIC^PHANTOM"
    ds.PatientID = f"SYNTHETIC-PHANTOM-{SEED}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid("study"), _uid("series")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20000101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "000000"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "PHANTOM", "", ""
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.StudyDescription = "SYNTHETIC PHANTOM - NOT A PATIENT"
    ds.ImageComments = (
        f"Synthetic phantom (model_export.data.phantom, seed {SEED}); not a real patient, "
        "not for clinical use."
    )


def phantom_dicom(pixels: np.ndarray) -> Dataset:
    """A Secondary Capture (Conversion Type SYN) of (H, W) uint8 ``pixels``."""
    sop_uid = _uid("instance")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, sop_uid
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "SYN"  # synthetic image
    ds.Manufacturer = "SYNTHETIC (ssacl-cxr model_export.data.phantom)"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    ds.BurnedInAnnotation = "NO"
    _identity(ds)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.WindowCenter, ds.WindowWidth = 127.5, 256  # stored value v shows as v / 255
    ds.PixelData = np.ascontiguousarray(pixels, np.uint8).tobytes()
    return ds


def write_examples(out: Path) -> tuple[Path, Path]:
    """Write ``chest_phantom.png`` and ``chest_phantom.dcm`` into ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    pixels = phantom_pixels()
    png, dcm = out / "chest_phantom.png", out / "chest_phantom.dcm"
    Image.fromarray(pixels).save(png, format="PNG", optimize=True)
    phantom_dicom(halve(pixels)).save_as(dcm, enforce_file_format=True)
    return png, dcm


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder (default: examples/)")
    args = parser.parse_args(argv)
    for path in write_examples(args.out):
        print(f"{path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
