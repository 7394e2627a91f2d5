"""The namespace against a model: hypothesis drives random sequences of mkdir, create,
replace, set_content, rename, unlink and rmdir on a real store and on a dictionary tree, and
checks that both agree on every error, every listing and every file's content; fsck runs
after every sequence."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fsmount import errors, fsck
from fsmount.remote import ROOT_ID, FileLocation, InputFile
from fsmount.store import Store

NAMES = st.sampled_from(["a", "b", "c"])
CONTENTS = [b"one", b"two two", b"three 3 3"]


@dataclass
class MNode:
    kind: str  # "dir" | "file"
    parent: int
    name: str
    content: int | None = None  # index into CONTENTS (None = empty file)
    children: dict[str, int] = field(default_factory=dict)


class NamespaceModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.store = Store(self.tmp.name)
        self.uid = self.store.default_user_id
        self.docs: list[FileLocation] = []
        for i, data in enumerate(CONTENTS):
            self.store.save_file_part(self.uid, 100 + i, 0, data)
            doc = self.store.upload_media(
                self.uid, InputFile(100 + i, 1, f"c{i}", hashlib.md5(data).hexdigest()))
            self.docs.append(doc.location)
        # Keep every content linked from a hidden folder, so documents never expire here.
        keep = self.store.mkdir(self.uid, ROOT_ID, "keep")
        for i, loc in enumerate(self.docs):
            self.store.create_file(self.uid, keep.id, f"k{i}", (loc,))
        self.model: dict[int, MNode] = {ROOT_ID: MNode("dir", ROOT_ID, "")}
        self.model[ROOT_ID].children["keep"] = keep.id
        self.model[keep.id] = MNode("dir", ROOT_ID, "keep")
        for i in range(len(self.docs)):
            fid = self.store.lookup(self.uid, keep.id, f"k{i}").id
            self.model[keep.id].children[f"k{i}"] = fid
            self.model[fid] = MNode("file", keep.id, f"k{i}", i)
        self.keep = keep.id

    def teardown(self) -> None:
        self.store.close()
        problems = fsck.check(self.tmp.name, deep=True)
        self.tmp.cleanup()
        assert problems == []

    # --- helpers ---------------------------------------------------------------------

    def dirs(self) -> list[int]:
        return sorted(i for i, n in self.model.items() if n.kind == "dir" and i != self.keep)

    def files(self) -> list[int]:
        return sorted(i for i, n in self.model.items()
                      if n.kind == "file" and n.parent != self.keep)

    def expect(self, fn, error: type[errors.FsmountError] | None):  # type: ignore[no-untyped-def]
        try:
            result = fn()
        except errors.FsmountError as exc:
            assert error is not None and isinstance(exc, error), (exc, error)
            return None
        assert error is None, f"expected {error.__name__}"
        return result

    def in_subtree(self, node: int, top: int) -> bool:
        for _ in range(1000):
            if node == top:
                return True
            if node == ROOT_ID:
                return False
            node = self.model[node].parent
        raise AssertionError("model cycle")

    def remove(self, nid: int) -> None:
        n = self.model.pop(nid)
        del self.model[n.parent].children[n.name]

    # --- rules -----------------------------------------------------------------------

    @rule(data=st.data(), name=NAMES)
    def mkdir(self, data: st.DataObject, name: str) -> None:
        parent = data.draw(st.sampled_from(self.dirs()))
        exists = name in self.model[parent].children
        node = self.expect(lambda: self.store.mkdir(self.uid, parent, name),
                           errors.AlreadyExists if exists else None)
        if node is not None:
            self.model[node.id] = MNode("dir", parent, name)
            self.model[parent].children[name] = node.id

    @rule(data=st.data(), name=NAMES, content=st.sampled_from([None, 0, 1, 2]),
          replace=st.booleans())
    def create(self, data: st.DataObject, name: str, content: int | None, replace: bool) -> None:
        parent = data.draw(st.sampled_from(self.dirs()))
        old = self.model[parent].children.get(name)
        segs = () if content is None else (self.docs[content],)
        error = None
        if old is not None:
            if self.model[old].kind == "dir":
                error = errors.IsADirectory
            elif not replace:
                error = errors.AlreadyExists
        node = self.expect(lambda: self.store.create_file(self.uid, parent, name, segs,
                                                          replace=replace), error)
        if node is not None:
            if old is not None:
                self.remove(old)
            self.model[node.id] = MNode("file", parent, name, content)
            self.model[parent].children[name] = node.id

    @precondition(lambda self: self.files())
    @rule(data=st.data(), content=st.sampled_from([None, 0, 1, 2]))
    def set_content(self, data: st.DataObject, content: int | None) -> None:
        fid = data.draw(st.sampled_from(self.files()))
        segs = () if content is None else (self.docs[content],)
        self.store.set_content(self.uid, fid, segs)
        self.model[fid].content = content

    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        parent, name = self.pick_entry(data)
        nid = self.model[parent].children.get(name)
        error = None
        if nid is None:
            error = errors.NotFound
        elif self.model[nid].kind == "dir":
            error = errors.IsADirectory
        self.expect(lambda: self.store.unlink(self.uid, parent, name), error)
        if error is None:
            self.remove(nid)  # type: ignore[arg-type]

    @rule(data=st.data())
    def rmdir(self, data: st.DataObject) -> None:
        parent, name = self.pick_entry(data)
        nid = self.model[parent].children.get(name)
        error = None
        if nid is None:
            error = errors.NotFound
        elif self.model[nid].kind != "dir":
            error = errors.NotADirectory
        elif self.model[nid].children:
            error = errors.NotEmpty
        self.expect(lambda: self.store.rmdir(self.uid, parent, name), error)
        if error is None:
            self.remove(nid)  # type: ignore[arg-type]

    def pick_entry(self, data: st.DataObject) -> tuple[int, str]:
        """A folder and a name in it: mostly an existing entry, sometimes any name."""
        full = [d for d in self.dirs() if self.model[d].children]
        if full and data.draw(st.integers(0, 4)):
            parent = data.draw(st.sampled_from(full))
            return parent, data.draw(st.sampled_from(sorted(self.model[parent].children)))
        return data.draw(st.sampled_from(self.dirs())), data.draw(NAMES)

    @rule(data=st.data(), replace=st.booleans())
    def rename(self, data: st.DataObject, replace: bool) -> None:
        parent, name = self.pick_entry(data)
        new_parent, new_name = self.pick_entry(data)
        src = self.model[parent].children.get(name)
        dst = self.model[new_parent].children.get(new_name)
        error = None
        if src is None:
            error = errors.NotFound
        elif self.model[src].kind == "dir" and self.in_subtree(new_parent, src):
            error = errors.InvalidArgument
        elif dst is not None and dst != src:
            src_dir = self.model[src].kind == "dir"
            dst_dir = self.model[dst].kind == "dir"
            if not replace:
                error = errors.AlreadyExists
            elif src_dir and not dst_dir:
                error = errors.NotADirectory
            elif not src_dir and dst_dir:
                error = errors.IsADirectory
            elif dst_dir and self.model[dst].children:
                error = errors.NotEmpty
        event(f"rename: {error.__name__ if error else 'ok'}")
        node = self.expect(lambda: self.store.rename(self.uid, parent, name, new_parent,
                                                     new_name, replace=replace), error)
        if node is None:
            return
        assert node.id == src
        if dst is not None and dst != src:
            self.remove(dst)
        n = self.model[src]  # type: ignore[index]
        del self.model[n.parent].children[n.name]
        n.parent, n.name = new_parent, new_name
        self.model[new_parent].children[new_name] = src  # type: ignore[assignment]

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def listings_and_contents_agree(self) -> None:
        for nid, n in self.model.items():
            if n.kind != "dir":
                continue
            listing = self.store.list_folder(self.uid, nid)
            assert [(e.name, e.id) for e in listing.entries] == sorted(n.children.items())
            for e in listing.entries:
                m = self.model[e.id]
                assert e.kind.value == m.kind and e.parent == nid
                if m.kind == "file":
                    want = b"" if m.content is None else CONTENTS[m.content]
                    assert e.size == len(want)
                    assert [s.location for s in e.segments] == (
                        [] if m.content is None else [self.docs[m.content]])
        usage = self.store.statfs(self.uid)
        assert usage.files == len(self.model)
        assert usage.used_bytes == sum(
            len(CONTENTS[n.content]) for n in self.model.values()
            if n.kind == "file" and n.content is not None)


NamespaceModel.TestCase.settings = settings(
    max_examples=80, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_namespace_matches_the_model = NamespaceModel.TestCase
