"""Two replicators under different names on the same state tables (one
writer per target topic): each with its definition in its own folder,
`first` and `second` under the test's tmp_path, to rewrite between runs."""

from conftest import Ferry, unique, write_config


def two_names(tmp_path, topics_a: list[str], topics_b: list[str], **config) -> tuple[Ferry, Ferry]:
    """The two replicators, source to target, copying `topics_a` and
    `topics_b`; `config` goes to both definitions (see `write_config`)."""
    prefix = unique("ferry-one-writer")
    out = []
    for name, topics in (("first", topics_a), ("second", topics_b)):
        folder = tmp_path / name
        folder.mkdir()
        kc, ri = write_config(folder, topics, **config)
        out.append(Ferry(kc, ri, name=unique(name), prefix=prefix))
    return out[0], out[1]
