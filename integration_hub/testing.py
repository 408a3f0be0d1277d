"""Helpers the tests share (fixtures live in conftest.py)."""

PASSWORD = "correct horse battery staple"  # noqa: S105 - test accounts only


def sign_in(page, username: str, password: str = PASSWORD) -> None:
    """Sign in through the login form, as a person would."""
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
