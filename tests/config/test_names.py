"""Model names: DNS labels that start with a letter, short enough for `kiln-<name>-candidate`."""

from __future__ import annotations

import pytest

from kiln.config.errors import SettingsError
from kiln.config.names import DEFAULT_NAME, MAX_LENGTH, check_name, is_name
from kiln.config.settings import KilnSettings, get_settings


@pytest.mark.parametrize("name", ["wine", "iris-2", "a", "a" * MAX_LENGTH, DEFAULT_NAME])
def test_dns_labels_that_start_with_a_letter_are_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Wine", "1wine", "wine-", "-wine", "a_b", "a.b", "a" * (MAX_LENGTH + 1), "wine\n"]
)
def test_anything_else_is_refused_in_one_line_naming_it(name: str) -> None:
    assert not is_name(name)
    with pytest.raises(SettingsError) as caught:
        check_name(name)
    assert repr(name)[:20] in str(caught.value) and "\n" not in str(caught.value)


def test_the_longest_name_fits_a_kubernetes_candidate_name() -> None:
    assert len(f"kiln-{'a' * MAX_LENGTH}-candidate") <= 63


def test_kiln_model_sets_the_name_and_a_bad_one_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("KILN_MODEL", "wine")
    assert KilnSettings().model == "wine"
    monkeypatch.delenv("KILN_MODEL")
    assert KilnSettings().model == DEFAULT_NAME
    monkeypatch.setenv("KILN_MODEL", "Wine_1")
    get_settings.cache_clear()
    with pytest.raises(SettingsError, match="KILN_MODEL='Wine_1' is not valid: .*starts with a"):
        get_settings()
    get_settings.cache_clear()
