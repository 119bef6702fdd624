# placeholder: replaced by the sign-in/health/tokens views
from django.contrib.auth.views import LoginView as SignInView  # noqa: F401
from django.http import HttpResponse


def sign_out(request):
    return HttpResponse()


def tokens(request):
    return HttpResponse()


def revoke_token(request, pk):
    return HttpResponse()


def health_live(request):
    return HttpResponse()


def health_ready(request):
    return HttpResponse()
