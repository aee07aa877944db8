"""Replicators under different names on the same state tables (one writer
per target topic): each with its definition in its own folder under the
test's tmp_path (`first`, `second`, ...), to rewrite between runs."""

from conftest import Ferry, unique, write_config

FOLDERS = ("first", "second", "third")


def on_shared_tables(tmp_path, *topics: list[str], **config) -> list[Ferry]:
    """One replicator, source to target, per list of topics it copies, in
    the folders `first`, `second`, `third`; `config` goes to every
    definition (see `write_config`)."""
    assert len(topics) <= len(FOLDERS), "at most three replicators"
    prefix = unique("ferry-one-writer")
    out = []
    for name, these in zip(FOLDERS, topics):
        folder = tmp_path / name
        folder.mkdir()
        kc, ri = write_config(folder, these, **config)
        out.append(Ferry(kc, ri, name=unique(name), prefix=prefix))
    return out


def two_names(tmp_path, topics_a: list[str], topics_b: list[str], **config) -> tuple[Ferry, Ferry]:
    """Two replicators copying `topics_a` and `topics_b` (see `on_shared_tables`)."""
    a, b = on_shared_tables(tmp_path, topics_a, topics_b, **config)
    return a, b
