"""`mgbp serve` running: the `/upscale` endpoint through gradio_client, the upload limit, readable errors, and the
page itself in a real headless browser (Debian's chromium + chromedriver, driven by Selenium) that uploads an
image, moves W, renders, downloads, and compares the file with `mgbp upscale`'s.

The browser test saves a screenshot of the page (tmp_path/serve.png; also to $MGBP_SERVE_SCREENSHOT when set,
which is how docs/figures/serve.png is made: see the README)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgbp.cli import main
from mgbp.io import read_image
from mgbp.web.app import start

pytest.importorskip("gradio")  # the web extra, mgbp[web] (installed by the README's command)

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "mgbp" / "assets" / "sample.png"
# Debian's packages (apt-get install chromium chromium-driver); Selenium must never download a driver.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
UPLOAD_LIMIT_MB = 1


@pytest.fixture(scope="module")
def server():
    server = start(port=None, device="cpu", max_upload_mb=UPLOAD_LIMIT_MB)
    yield server
    root = server.engine.work_root
    server.close()
    assert not root.exists(), "the server's temporary files are removed when it stops"


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False, download_files=str(server.engine.work_root / "client"))


def cli_output(source: Path, target: Path, noise: float) -> Path:
    assert main(["upscale", "-q", str(source), "-o", str(target), "-m", "mgbp-x4", "-W", str(noise)]) == 0
    return target


def test_api_returns_the_commands_file(client, tmp_path):
    from gradio_client import handle_file

    source = tmp_path / "photo.png"
    Image.open(SAMPLE).crop((40, 40, 72, 68)).save(source)
    result = Path(client.predict(handle_file(str(source)), "mgbp-x4", 4, 0.5, api_name="/upscale"))
    assert result.name == "photo_x4.png"
    assert result.read_bytes() == cli_output(source, tmp_path / "cli.png", 0.5).read_bytes()


def test_api_errors_are_one_readable_line(client, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(Exception, match=r"^notes\.png: cannot read image") as caught:
        client.predict(handle_file(str(bad)), "mgbp-x4", 4, 0.0, api_name="/upscale")
    assert "Traceback" not in str(caught.value) and "/tmp" not in str(caught.value)
    good = tmp_path / "ok.png"
    Image.open(SAMPLE).crop((0, 0, 8, 8)).save(good)
    with pytest.raises(Exception, match="x4, not x2"):
        client.predict(handle_file(str(good)), "mgbp-x4", 2, 0.0, api_name="/upscale")
    with pytest.raises(Exception, match=r"W\) must be finite and in \[0, 1\]"):
        client.predict(handle_file(str(good)), "mgbp-x4", 4, 3.0, api_name="/upscale")


def test_uploads_over_the_limit_are_refused(client, tmp_path):
    from gradio_client import handle_file

    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (700, 700, 3), np.uint8)).save(big)
    assert big.stat().st_size > UPLOAD_LIMIT_MB * 1e6
    with pytest.raises(Exception, match="(?i)file size|too large|exceeds"):
        client.predict(handle_file(str(big)), "mgbp-x4", 4, 0.0, api_name="/upscale")


# ----------------------------------------------------------------------------------------------- the browser


def browser_available() -> bool:
    return Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()


@pytest.fixture
def browser(tmp_path):
    if not browser_available():
        pytest.skip("a browser is absent: chromium/chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # a closed network refuses background connections: switch them off, and never fetch a driver
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1500"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout=90.0, what="the page"):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d))
    except WebDriverException as exc:
        raise AssertionError(f"timed out waiting for {what}") from exc


def text_of(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.ID, element_id)
    return found[0].text if found else ""


def test_page_uploads_previews_renders_and_downloads(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server.url)
    upload = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#images input[type=file]"),
                      what="the upload field")
    upload.send_keys(str(SAMPLE))
    wait_for(browser, lambda d: "W = 0:" in text_of(d, "preview-note"), what="the first preview")

    # move the region: click near the image's lower right corner (the region is then moved inside the image)
    picture = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#source img"), what="the image")
    offset = [int(0.4 * picture.rect[side]) for side in ("width", "height")]  # from the image's centre
    ActionChains(browser).move_to_element_with_offset(picture, *offset).click().perform()
    wait_for(browser, lambda d: "row 64, column 64" in text_of(d, "preview-note"), what="the region to move")

    # W: 0 -> 0.5 with the keyboard (10 steps of 0.05), as a user would slide it
    slider = browser.find_element(By.CSS_SELECTOR, "#noise input[type=range]")
    browser.execute_script("arguments[0].focus()", slider)
    slider.send_keys(Keys.HOME, *[Keys.ARROW_RIGHT] * 10)
    wait_for(browser, lambda d: "W = 0.5:" in text_of(d, "preview-note"), what="the preview at W = 0.5")

    browser.find_element(By.ID, "render").click()
    link = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#download a[download]"),
                    what="the download link")
    assert link.get_attribute("download") == "sample_x4.png"
    link.click()
    downloaded = browser.downloads / "sample_x4.png"
    wait_for(browser, lambda d: downloaded.is_file() and not list(browser.downloads.glob("*.crdownload")),
             what="the download")

    expected = cli_output(SAMPLE, tmp_path / "cli" / "sample_x4.png", 0.5)
    assert downloaded.read_bytes() == expected.read_bytes()
    assert read_image(downloaded).rgb.shape == (512, 512, 3)

    browser.find_element(By.ID, "curve").click()  # the image's own NIQE-against-W curve
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#curve-plot img"), what="the NIQE curve")
    time.sleep(0.5)  # let the images finish drawing before the picture is taken
    shot = tmp_path / "serve.png"
    browser.save_screenshot(str(shot))
    assert Image.open(shot).size[0] >= 1000
    if os.environ.get("MGBP_SERVE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MGBP_SERVE_SCREENSHOT"])
    print(f"screenshot: {shot}")
