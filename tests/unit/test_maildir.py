"""Maildir delivery: atomic through tmp/, and idempotent by name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from metallica.mail_sender.maildir import Maildir

NAME = Maildir.name_for("abc123", 1_700_000_000.9)
CONTENT = b"From: a@b.example\r\nTo: c@d.example\r\n\r\nhello\r\n"


def files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_the_three_folders_exist(tmp_path: Path) -> None:
    Maildir(tmp_path / "spool")
    assert files(tmp_path / "spool") == ["cur", "new", "tmp"]


def test_names_are_stable_per_mail() -> None:
    assert NAME == "1700000000.Mabc123.metallica"
    assert Maildir.name_for("abc123", 1_700_000_000.1) == NAME
    assert Maildir.name_for("abc124", 1_700_000_000.9) != NAME


def test_deliver_writes_into_new_through_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = Maildir(tmp_path)
    links: list[tuple[Path, Path, bytes]] = []
    real_link = os.link

    def spy_link(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        links.append((Path(source), Path(target), Path(source).read_bytes()))
        real_link(source, target)

    monkeypatch.setattr(os, "link", spy_link)
    path = box.deliver(NAME, CONTENT)

    assert path == tmp_path / "new" / NAME
    assert path.read_bytes() == CONTENT
    ((source, target, content_at_link),) = links
    assert source.parent == tmp_path / "tmp"
    assert target == path
    assert content_at_link == CONTENT  # complete before it became visible in new/
    assert files(tmp_path / "tmp") == []
    assert files(tmp_path / "new") == [NAME]
    assert files(tmp_path / "cur") == []


def test_a_second_delivery_of_the_same_name_writes_nothing(tmp_path: Path) -> None:
    box = Maildir(tmp_path)
    first = box.deliver(NAME, CONTENT)
    again = box.deliver(NAME, b"something else entirely")
    assert again == first
    assert first.read_bytes() == CONTENT
    assert files(tmp_path / "new") == [NAME]
    assert files(tmp_path / "tmp") == []
    assert box.mails() == [first]


def test_a_mail_a_reader_moved_to_cur_is_found_and_not_delivered_again(tmp_path: Path) -> None:
    box = Maildir(tmp_path)
    delivered = box.deliver(NAME, CONTENT)
    seen = tmp_path / "cur" / f"{NAME}:2,S"
    delivered.rename(seen)

    assert box.find(NAME) == seen
    assert box.deliver(NAME, CONTENT) == seen
    assert files(tmp_path / "new") == []
    assert files(tmp_path / "tmp") == []
    assert box.mails() == [seen]


def test_a_mail_moved_to_cur_without_flags_is_found(tmp_path: Path) -> None:
    box = Maildir(tmp_path)
    box.deliver(NAME, CONTENT).rename(tmp_path / "cur" / NAME)
    assert box.find(NAME) == tmp_path / "cur" / NAME
    box.deliver(NAME, CONTENT)
    assert files(tmp_path / "new") == []


def test_find_does_not_confuse_names_sharing_a_prefix(tmp_path: Path) -> None:
    box = Maildir(tmp_path)
    other = Maildir.name_for("abc1234", 1_700_000_000)
    box.deliver(other, CONTENT).rename(tmp_path / "cur" / f"{other}:2,S")
    assert box.find(NAME) is None
    assert box.deliver(NAME, CONTENT) == tmp_path / "new" / NAME


def test_losing_a_delivery_race_keeps_the_winners_mail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = Maildir(tmp_path)
    winner = box.deliver(NAME, CONTENT)
    # The loser looked before the winner linked its file: it finds nothing, then links late.
    monkeypatch.setattr(box, "find", lambda name: None)
    assert box.deliver(NAME, b"the loser's copy") == winner
    assert winner.read_bytes() == CONTENT
    assert files(tmp_path / "new") == [NAME]
    assert files(tmp_path / "tmp") == []
