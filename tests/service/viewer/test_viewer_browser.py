"""The viewer in a real headless Chromium against a real uvicorn on the shipped weights.

A phantom PNG: wait for the report, click a sentence, ground a phrase, press Enter on a
sentence; each time the overlay must show that item's heatmap (loaded, visible, covering the
image) and its box where the response puts it. A phantom DICOM: the same overlays on a blank
frame of the image's size. Auth is on: the page loads without a key, its API calls send the
one typed in (and show the 401 problem without it).

``CXR_VIEWER_SCREENSHOT=docs/figures/viewer.png`` saves the page with a sentence's overlay;
``CXR_VIEWER_IMAGE=some.png`` uploads that PNG/JPEG instead of the phantom.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.app import create_app
from service.settings import Settings

from ..api.uvicorn_thread import HOST, serve

WEIGHTS = Path(__file__).resolve().parents[3] / "weights"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
KEY = "viewer-browser-key-0123456789"
PHRASE = "right lower lung zone"
WAIT_S = 60  # for the report on a busy 2-core machine

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (dev extra)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _need_tools() -> None:
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(tool) and os.access(tool, os.X_OK)):
            pytest.skip(f"{tool} missing (apt-get install chromium chromium-driver)")
    if not (WEIGHTS / "manifest.json").is_file():
        pytest.skip(f"no shipped weights at {WEIGHTS}")


def _phantom(size: int = 384) -> np.ndarray:
    """(size, size) uint8 phantom radiograph."""
    from model_export.data.phantom import generate_phantom

    img = generate_phantom(20_250_601, size).image
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PNG to upload: ``CXR_VIEWER_IMAGE`` or a 384 px phantom."""
    if os.environ.get("CXR_VIEWER_IMAGE"):
        return Path(os.environ["CXR_VIEWER_IMAGE"]).resolve()
    path = tmp_path_factory.mktemp("viewer") / "phantom.png"
    Image.fromarray(_phantom()).save(path, format="PNG")
    return path


@pytest.fixture(scope="module")
def dicom_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The phantom (320 x 384 crop) as an 8-bit MONOCHROME2 CR chest DICOM."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.ascontiguousarray(_phantom()[32:352])  # not square: the frame keeps the ratio
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    path = tmp_path_factory.mktemp("viewer") / "phantom.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    _need_tools()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        weights_dir=WEIGHTS,
        provider="cpu",
        auth_enabled=True,
        api_keys=[KEY],
        batch_window_ms=5.0,
        log_level="WARNING",
    )
    with serve(create_app(settings), "uvicorn-viewer") as p:
        yield p


@pytest.fixture(scope="module")
def driver(port: int) -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1100"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    d.set_script_timeout(WAIT_S)
    try:
        yield d
    finally:
        d.quit()


def _rect(driver: Any, element_id: str) -> dict[str, float]:
    js = "const r = document.getElementById(arguments[0]).getBoundingClientRect();"
    return driver.execute_script(
        js + "return {x: r.x, y: r.y, w: r.width, h: r.height};", element_id
    )


def _assert_overlay(driver: Any, item: dict[str, Any]) -> None:
    """#overlay shows item's heatmap over the whole image; #box sits at item's box."""
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script(
            "const o = document.getElementById('overlay');"
            "return !o.hidden && o.complete && o.naturalWidth > 0 && o.src === arguments[0];",
            "data:image/png;base64," + item["heatmap"]["data"],
        ),
        message="the overlay did not show the item's heatmap",
    )
    overlay, box = driver.find_element(By.ID, "overlay"), driver.find_element(By.ID, "box")
    assert overlay.is_displayed() and box.is_displayed()
    natural = driver.execute_script(
        "const o = arguments[0]; return [o.naturalWidth, o.naturalHeight];", overlay
    )
    assert natural == [item["heatmap"]["width"], item["heatmap"]["height"]]
    stage, over, b = _rect(driver, "stage"), _rect(driver, "overlay"), _rect(driver, "box")
    assert stage["w"] > 100 and stage["h"] > 100
    assert all(abs(over[k] - stage[k]) < 1.0 for k in "xywh"), (over, stage)
    img = driver.execute_script("return window.cxrViewer.image;")
    sx, sy = stage["w"] / img["width"], stage["h"] / img["height"]
    want = item["box"]
    assert abs(b["x"] - stage["x"] - want["x0"] * sx) < 1.5
    assert abs(b["y"] - stage["y"] - want["y0"] * sy) < 1.5
    assert abs(b["w"] - (want["x1"] - want["x0"]) * sx) < 1.5
    assert abs(b["h"] - (want["y1"] - want["y0"]) * sy) < 1.5


def _wait_status(driver: Any, js_done: str) -> None:
    WebDriverWait(driver, WAIT_S).until(
        lambda d: (
            d.execute_script(js_done)
            or "error" in d.find_element(By.ID, "status").get_attribute("class")
        )
    )
    status = driver.find_element(By.ID, "status")
    assert "error" not in status.get_attribute("class"), status.text


def _upload(driver: Any, port: int, path: Path, key: str = KEY) -> None:
    """Load the page, type ``key`` (if any) and choose ``path``."""
    driver.get_log("browser")  # drain: each test checks only its own console errors
    driver.get(f"http://{HOST}:{port}/viewer")
    assert driver.find_element(By.TAG_NAME, "h1").text.startswith("SS-ACL")
    if key:
        driver.find_element(By.ID, "api-key").send_keys(key)
    driver.find_element(By.ID, "file").send_keys(str(path))


def _report(driver: Any, port: int, path: Path) -> dict[str, Any]:
    """Upload ``path`` with the key; the report the page received."""
    _upload(driver, port, path)
    _wait_status(driver, "return window.cxrViewer.report !== null;")
    return dict(driver.execute_script("return window.cxrViewer.report;"))


def test_viewer_overlays_sentences_and_phrases(driver: Any, port: int, image_path: Path) -> None:
    rep = _report(driver, port, image_path)
    base = driver.execute_script(
        "const b = document.getElementById('base'); return [b.naturalWidth, b.naturalHeight];"
    )
    assert base == [rep["image"]["width"], rep["image"]["height"]]  # decoded by the browser
    assert driver.find_element(By.ID, "disclaimer").text == rep["disclaimer"]
    assert len(driver.find_elements(By.CSS_SELECTOR, "#entities tbody tr")) == len(rep["entities"])
    assert "report total" in driver.find_element(By.ID, "timings").text

    sentences = driver.find_elements(By.CSS_SELECTOR, "#sentences button.choice")
    assert len(sentences) == len(rep["sentences"]) >= 1
    assert not driver.find_element(By.ID, "overlay").is_displayed()  # nothing before a choice
    sentences[0].click()
    _assert_overlay(driver, rep["sentences"][0])
    assert sentences[0].get_attribute("aria-pressed") == "true"
    if os.environ.get("CXR_VIEWER_SCREENSHOT"):
        driver.save_screenshot(os.environ["CXR_VIEWER_SCREENSHOT"])

    phrase = driver.find_element(By.ID, "phrase")
    phrase.send_keys(PHRASE, Keys.ENTER)
    _wait_status(driver, "return window.cxrViewer.ground !== null;")
    grounding = driver.execute_script("return window.cxrViewer.ground.groundings[0];")
    assert grounding["phrase"] == PHRASE
    _assert_overlay(driver, grounding)
    chosen = driver.find_element(By.CSS_SELECTOR, "#groundings button.choice")
    assert chosen.get_attribute("aria-pressed") == "true"
    assert sentences[0].get_attribute("aria-pressed") == "false"

    sentences[0].send_keys(Keys.ENTER)  # keyboard: focus + Enter pins the sentence again
    _assert_overlay(driver, rep["sentences"][0])
    assert sentences[0].get_attribute("aria-pressed") == "true"
    assert chosen.get_attribute("aria-pressed") == "false"
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors  # e.g. a Content-Security-Policy violation


def test_dicom_overlays_on_a_blank_frame_of_the_image_size(
    driver: Any, port: int, dicom_path: Path
) -> None:
    rep = _report(driver, port, dicom_path)
    assert rep["image"]["source"] == "dicom"
    assert (rep["image"]["width"], rep["image"]["height"]) == (384, 320)
    assert not driver.find_element(By.ID, "base").is_displayed()  # pixels are not decoded here
    assert driver.find_element(By.ID, "no-pixels").is_displayed()
    stage = _rect(driver, "stage")
    assert abs(stage["h"] / stage["w"] - 320 / 384) < 0.01  # the frame has the image's ratio
    sentence = driver.find_element(By.CSS_SELECTOR, "#sentences button.choice")
    sentence.click()
    _assert_overlay(driver, rep["sentences"][0])
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_without_the_key_the_page_shows_the_401_problem(
    driver: Any, port: int, image_path: Path
) -> None:
    _upload(driver, port, image_path, key="")
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, 10).until(lambda d: "error" in status.get_attribute("class"))
    assert status.text.startswith("Report failed: 401") and status.get_attribute("role") == "alert"
    assert driver.find_element(By.ID, "results").get_attribute("hidden") is not None
