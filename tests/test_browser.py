"""The explorer end to end: `gankit serve` in a subprocess, its page in a real headless
Chromium (the system's, driven by Playwright; tests/explorer_browser.py), clicked like a
person would, and every picture checked to change.

Without Chromium these tests skip, unless GANKIT_REQUIRE_BROWSER=1 (CI sets it): then
they fail."""

import base64
import io
import os

import pytest
from explorer_browser import PICTURES, browser_missing, chromium, loaded, open_explorer, pixels, serving, settled
from PIL import Image


@pytest.fixture(scope="module")
def browser():
    missing = browser_missing()
    if missing:
        if os.environ.get("GANKIT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"GANKIT_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    with chromium() as browser:
        yield browser


def size_of(data_url: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).size


def click_and_see_it_change(page, do, selector):
    """Do something (a click, a slider move); the picture at selector loads anew and differs."""
    src, before = page.eval_on_selector(selector, "img => img.src"), pixels(page, selector)
    do()
    loaded(page, selector, old_src=src)
    after = pixels(page, selector)
    assert after != before, f"{selector} did not change"
    return after


def test_the_explorer_in_a_real_browser(browser, explorer_runs, tmp_path):
    with serving(explorer_runs / "gan") as server:
        page = open_explorer(browser, server.url)
        assert page.title() == "gan · epoch 0.5 · gankit explorer"
        assert page.is_hidden("#class-picker")  # not a conditional run
        grid = pixels(page, "#grid")
        assert size_of(grid) == (8 * 18 + 2, 8 * 18 + 2)  # 64 images of 16 px
        # Shown at a whole multiple of its size, pixelated: 16 px images at 4x.
        assert page.eval_on_selector("#grid", "img => img.getBoundingClientRect().width") == 4 * size_of(grid)[0]
        assert page.eval_on_selector("#grid", "img => getComputedStyle(img).imageRendering") == "pixelated"

        click_and_see_it_change(page, lambda: page.click("#new-samples"), "#grid")
        assert page.inner_text("#seed") == "1"
        assert "--seed 1" in page.inner_text("#command")

        # The slider, dragged by the mouse from the middle to 90 %: the image at t changes,
        # the endpoints stay.
        ends = [pixels(page, s) for s in ("#end-a", "#end-b")]
        box = page.locator("#t").bounding_box()
        click_and_see_it_change(page, lambda: page.mouse.click(box["x"] + 0.9 * box["width"],
                                                                box["y"] + box["height"] / 2), "#interp")
        assert 0.8 < float(page.input_value("#t")) < 1
        assert [pixels(page, s) for s in ("#end-a", "#end-b")] == ends

        click_and_see_it_change(page, lambda: page.click("#new-ends"), "#end-a")
        page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
    assert server.returncode == 0, server.stderr
    assert Image.open(tmp_path / "explorer.png").size[0] == 1280


def test_the_class_picker_in_a_real_browser(browser, explorer_runs):
    with serving(explorer_runs / "cond") as server:
        page = open_explorer(browser, server.url)
        assert page.is_visible("#class-picker")
        assert page.eval_on_selector_all("#class option", "options => options.map(o => o.text)") == [
            "all classes", *map(str, range(10))]
        assert size_of(pixels(page, "#grid")) == (10 * 18 + 2, 10 * 18 + 2)  # all classes: 10 x 10
        assert size_of(pixels(page, "#interp"))[0] == 10 * 18 + 2  # a walk drawn as each class
        sevens = click_and_see_it_change(page, lambda: page.select_option("#class", "7"), "#grid")
        settled(page)
        assert "--class 7" in page.inner_text("#command")
        assert size_of(pixels(page, "#interp")) == (20, 20)  # one class: one image
        click_and_see_it_change(page, lambda: page.select_option("#class", "2"), "#grid")
        back = click_and_see_it_change(page, lambda: page.select_option("#class", "7"), "#grid")
        assert back == sevens  # the same seed and class: the same picture
        for selector in PICTURES:
            assert page.eval_on_selector(selector, "img => img.naturalWidth") > 0
    assert server.returncode == 0, server.stderr
