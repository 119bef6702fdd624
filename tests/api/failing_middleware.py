"""A middleware that fails on every request: errors raised outside any view."""


class Fail:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        raise RuntimeError("failing on purpose (test middleware)")
