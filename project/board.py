"""The demo board's HTTP side: the page, its state as JSON, and the edits it posts.

Every edit is a plain ``Task`` save or delete; ``realtime.sync`` (registered in
``models.register_sync``) pushes it to the ``board`` stream when it commits, and
every open board page applies it. The page script posts with
``Accept: application/json`` and gets JSON; a plain form post is redirected to
the board.
"""

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from realtime import positions

from .forms import TaskForm
from .models import BOARD_STREAM, Task


def snapshot():
    """``(seq, tasks)``: the board, with every ``board`` message up to ``seq`` in it.

    The head is read before the tasks, so the tasks may already include later
    changes but never miss an earlier one; the page applies the messages after
    ``seq`` on top, which changes nothing that is already there.
    """
    seq = positions([BOARD_STREAM])["streams"][BOARD_STREAM]
    return seq, list(Task.objects.all())


def _page(request, form, status=200):
    seq, tasks = snapshot()
    columns = [
        (value, label, [task for task in tasks if task.status == value]) for value, label in Task.Status.choices
    ]
    context = {"seq": seq, "columns": columns, "form": form}
    return render(request, "board.html", context, status=status)


def _wants_json(request):
    return "application/json" in request.headers.get("Accept", "")


def _invalid(request, form):
    if _wants_json(request):
        return JsonResponse({"errors": form.errors}, status=400)
    return _page(request, form, status=400)


@require_GET
@login_required
def board(request):
    """The board page: three columns of tasks, kept live through the ``board`` stream."""
    return _page(request, TaskForm(creating=True))


@require_GET
@login_required
def board_state(request):
    """``{"seq": n, "tasks": [...]}`` (see :func:`snapshot`): what the page reloads after a ``resync``."""
    seq, tasks = snapshot()
    return JsonResponse({"seq": seq, "tasks": [task.as_json() for task in tasks]})


@require_POST
@login_required
def create_task(request):
    """Add a task to "To do" (or the posted status)."""
    form = TaskForm(request.POST, creating=True)
    if not form.is_valid():
        return _invalid(request, form)
    task = Task.objects.create(**form.changes())
    if _wants_json(request):
        return JsonResponse(task.as_json(), status=201)
    return redirect("board")


@require_POST
@login_required
def update_task(request, pk):
    """Rename a task, move it to another column, or both.

    Saves only the fields that changed, so the push carries only those.
    """
    task = get_object_or_404(Task, pk=pk)
    form = TaskForm(request.POST)
    if not form.is_valid():
        return _invalid(request, form)
    changed = [name for name, value in form.changes().items() if getattr(task, name) != value]
    if changed:
        for name in changed:
            setattr(task, name, form.cleaned_data[name])
        task.save(update_fields=[*changed, "updated_at"])
    if _wants_json(request):
        return JsonResponse(task.as_json())
    return redirect("board")


@require_POST
@login_required
def delete_task(request, pk):
    """Delete a task."""
    task = get_object_or_404(Task, pk=pk)
    task.delete()
    if _wants_json(request):
        return JsonResponse({"pk": pk, "deleted": True})
    return redirect("board")
