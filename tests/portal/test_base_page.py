"""What every page's head links to exists: a browser asks for each of them."""

import re

from django.contrib.staticfiles import finders


def test_every_page_names_an_icon_and_stylesheet_that_exist(client, db):
    html = client.get("/login/").content.decode()
    linked = re.findall(r'<(?:link|script)[^>]+(?:href|src)="/static/([^"]+)"', html)
    assert any(path.startswith("favicon") for path in linked), "no icon: browsers ask /favicon.ico"
    for path in linked:
        assert finders.find(path), f"{path} is linked from every page but is not a static file"
