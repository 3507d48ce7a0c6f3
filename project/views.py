from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseForbidden, JsonResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

import realtime

from .forms import NoticeForm


@login_required
def home(request):
    """The demo page: shows notices pushed to this user as they arrive."""
    form = NoticeForm() if request.user.is_staff else None
    return render(request, "home.html", {"form": form})


@require_POST
@login_required
def send_notice(request):
    """Staff only: publish a ``notice`` to everyone or to one user.

    Answers JSON to the page's script (``to``: the username, or null for
    everyone) and redirects a plain form post.
    """
    if not request.user.is_staff:
        return HttpResponseForbidden(_("Only staff may send notices."))
    form = NoticeForm(request.POST)
    wants_json = "application/json" in request.headers.get("Accept", "")
    if not form.is_valid():
        if wants_json:
            return JsonResponse({"errors": form.errors}, status=400)
        return render(request, "home.html", {"form": form}, status=400)
    data = form.cleaned_data
    target = form.recipient or "broadcast"
    published = realtime.notify(
        target,
        "notice",
        {
            "title": data["title"],
            "body": data["body"],
            "level": data["level"],
            "sender": request.user.get_username(),
        },
        inbox=True,  # the header's bell lists it until it is read
    )
    username = form.recipient.get_username() if form.recipient else None
    if wants_json:
        return JsonResponse({"to": username, "stream": published.stream, "seq": published.seq})
    if username is None:
        messages.success(request, _("Notice sent to everyone."))
    else:
        messages.success(request, _("Notice sent to %(username)s.") % {"username": username})
    return redirect("home")
