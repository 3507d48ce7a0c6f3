from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def home(request):
    """The demo page: shows notices pushed to this user as they arrive."""
    return render(request, "home.html")
