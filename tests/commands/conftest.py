import pytest


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # The shared `users` fixture hashes six passwords with PBKDF2 per test (~2 s).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
