"""docs/model-sync.md's examples, run: the ``register()`` example, the message it
shows, ``push``/``push_many``, the testing example and the ``AUTHORIZE`` hook.

The docs' models are declared in an isolated app registry with the app label
``myapp`` (what ``myapp/models.py`` would give them), so they get the message
types and tables the docs show without touching the suite's own registry. The
docs do not show ``Project``; the test declares it, with the ``members`` the
hook reads.
"""

import ast
import json
import re
import sys
import types

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connection, models
from django.test.utils import isolate_apps

from realtime import sync
from realtime.testing import capture_notifications, connect
from tests.procs import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

DOC = ROOT / "docs" / "model-sync.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


def doc_block(language, marker):
    """The one ``language`` block of the doc that contains ``marker``."""
    found = [code for lang, code in FENCE.findall(DOC.read_text()) if lang == language and marker in code]
    assert len(found) == 1, f"docs/model-sync.md needs exactly one ```{language} block with {marker!r}"
    return found[0]


def in_myapp(source):
    """``source`` with ``class Meta: app_label = "myapp"`` added to its models, compiled."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            node.body.append(ast.parse('class Meta:\n    app_label = "myapp"').body[0])
    return compile(ast.fix_missing_locations(tree), str(DOC), "exec")


@pytest.fixture
def myapp(monkeypatch):
    """``myapp.models`` (the docs' ``Task`` and the test's ``Project``) with tables, and ``myapp.realtime_hooks``."""
    with isolate_apps("tests.testapp") as isolated:
        # So that relations to it resolve; "+" keeps User free of a reverse accessor.
        isolated.register_model("auth", User)

        class Project(models.Model):
            name = models.CharField(max_length=100)
            members = models.ManyToManyField(User, related_name="+")

            class Meta:
                app_label = "myapp"

        namespace = {"__name__": "myapp.models", "models": models, "Project": Project}
        exec(in_myapp(doc_block("python", "@sync.register")), namespace)
        task = namespace["Task"]
    try:
        package = types.ModuleType("myapp")
        package.__path__ = []
        module = types.ModuleType("myapp.models")
        module.Project, module.Task = Project, task
        monkeypatch.setitem(sys.modules, "myapp", package)
        monkeypatch.setitem(sys.modules, "myapp.models", module)
        hooks = types.ModuleType("myapp.realtime_hooks")
        monkeypatch.setitem(sys.modules, "myapp.realtime_hooks", hooks)
        exec(doc_block("python", "def authorize"), hooks.__dict__)
        with connection.schema_editor() as editor:
            editor.create_model(Project)
            editor.create_model(task)
        try:
            yield types.SimpleNamespace(Project=Project, Task=task, hooks=hooks)
        finally:
            with connection.schema_editor() as editor:
                editor.delete_model(task)
                editor.delete_model(Project)
    finally:
        sync.unregister(task)


def test_an_update_publishes_the_documented_message(myapp):
    documented = json.loads(doc_block("json", '"payload"'))
    project = myapp.Project.objects.create(pk=3, name="docs")
    task = myapp.Task.objects.create(project=project, title="Draft", status="open")
    with capture_notifications() as sent:
        task.title, task.status = "Write docs", "done"
        task.save()
    (message,) = sent
    assert message.envelope.keys() == documented.keys()
    assert (message.type, message.stream) == (documented["type"], documented["stream"])
    assert message.payload == {**documented["payload"], "pk": task.pk}


def test_push_and_push_many_publish_what_no_signal_reports(myapp):
    p = myapp.Project.objects.create(pk=3, name="docs")
    for pk in range(1, 5):
        myapp.Task.objects.create(pk=pk, project=p, title=f"t{pk}", status="open")
    with capture_notifications() as sent:
        exec(doc_block("python", "sync.push_many"), {"Task": myapp.Task, "p": p})
    assert [(n.stream, n.payload["pk"], n.payload["fields"]["status"]) for n in sent] == [
        *[("project:3", pk, "archived") for pk in range(1, 5)],
        ("project:3", 4, "archived"),
    ]


def test_the_testing_example_passes(myapp):
    project = myapp.Project.objects.create(pk=3, name="docs")
    namespace = {"Task": myapp.Task, "project": project}
    exec(doc_block("python", "capture_notifications"), namespace)
    namespace["test_closing_a_task_notifies_the_project"](db=None)


async def subscribe(user, stream):
    """Connect as ``user``, subscribe to ``stream``; the server's answer."""
    communicator, _ = await connect(user)
    try:
        await communicator.send_json_to({"type": "subscribe", "stream": stream})
        return await communicator.receive_json_from(timeout=5)
    finally:
        await communicator.disconnect()


async def test_a_stream_of_your_own_needs_the_documented_authorize_hook(myapp, settings):
    alice = await sync_to_async(User.objects.create_user)("alice")
    bob = await sync_to_async(User.objects.create_user)("bob")
    project = await myapp.Project.objects.acreate(pk=3, name="docs")
    await project.members.aadd(alice)

    settings.REALTIME = {}
    refused = await subscribe(alice, "project:3")
    assert (refused["type"], refused["payload"]["code"]) == ("error", "forbidden")

    namespace = {}
    exec(doc_block("python", '"AUTHORIZE"'), namespace)
    settings.REALTIME = namespace["REALTIME"]
    assert (await subscribe(alice, "project:3"))["type"] == "subscribed"
    assert (await subscribe(bob, "project:3"))["payload"]["code"] == "forbidden"
    # The default streams stay readable through the hook's last line.
    assert (await subscribe(bob, f"user:{bob.pk}"))["type"] == "subscribed"
    assert (await subscribe(bob, f"user:{alice.pk}"))["payload"]["code"] == "forbidden"
