from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog

from . import board, views

urlpatterns = [
    path("", views.home, name="home"),
    path("notices/", views.send_notice, name="send_notice"),
    path("board/", board.board, name="board"),
    path("board/state/", board.board_state, name="board_state"),
    path("board/tasks/", board.create_task, name="create_task"),
    path("board/tasks/<int:pk>/", board.update_task, name="update_task"),
    path("board/tasks/<int:pk>/delete/", board.delete_task, name="delete_task"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # set_language: the pages' language switch posts here.
    path("i18n/", include("django.conf.urls.i18n")),
    # gettext() and friends for static/*.js, with the demo's djangojs catalog.
    path("jsi18n/", JavaScriptCatalog.as_view(packages=["project"]), name="javascript-catalog"),
    path("realtime/", include("realtime.urls")),
]

# Serves static files when DEBUG is on (daphne, unlike runserver, does not).
urlpatterns += staticfiles_urlpatterns()
