"""Link the dashboard from the admin index page.

``dispatcher/templates/admin/dispatcher_index.html`` extends the admin's own
``admin/index.html`` and adds an "Operations" box. A template named
``admin/index.html`` in this app would never be found: the app-directories
loader searches apps in INSTALLED_APPS order and ``django.contrib.admin``
comes first. So the admin site is pointed at our template instead, unless the
project already chose its own index template.
"""

from django.contrib import admin

INDEX_TEMPLATE = "admin/dispatcher_index.html"


def install_admin_link(site: admin.AdminSite | None = None) -> None:
    """Make ``site`` (default: ``admin.site``) render the index with the dashboard link."""
    site = site or admin.site
    if site.index_template is None:
        site.index_template = INDEX_TEMPLATE
