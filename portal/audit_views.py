# placeholder: replaced by the audit page and exports
from django.http import HttpResponse


def audit_list(request):
    return HttpResponse()


def export_csv(request):
    return HttpResponse()


def export_json(request):
    return HttpResponse()
