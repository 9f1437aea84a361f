"""Screenshot of an html leaderboard page in headless chromium (Debian's chromium and chromium-driver, selenium),
with the first discordant-image panel open: the README's picture of the page.

    python tools/screenshot_page.py leaderboards/default.html leaderboards/default_page.png
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(page: str, out: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium") or "chromium"
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=opts)
    try:
        driver.get(Path(page).resolve().as_uri())
        buttons = driver.find_elements(By.CSS_SELECTOR, "button.images")
        if buttons:
            buttons[0].click()
            heading = buttons[0].find_element(By.XPATH, "ancestor::table/preceding-sibling::h2[1]")
            driver.execute_script("arguments[0].scrollIntoView()", heading)
        driver.save_screenshot(out)
    finally:
        driver.quit()


if __name__ == "__main__":
    main(*sys.argv[1:3])
