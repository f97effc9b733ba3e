"""Partition the dispatch history by month on PostgreSQL (see dispatcher.partitions).

The tables are renamed, created again as partitioned tables with the same
columns, constraints and indexes, the rows copied in chunks, the old tables
dropped, the id sequences set after the copied rows. It runs in the
migration's transaction: all or nothing. Stop the workers, beat and the web
processes while it runs (it takes the tables' exclusive locks; see
docs/deployment.md, "Capacity", for how long it takes). On SQLite only the
foreign-key constraints to Dispatch go.

A partitioned table's month is retired by DROP, which a database foreign key
to it would forbid: the rows pointing at a dispatch (errors, receipts,
fallback hops, suppressions, digest windows) keep their on_delete rules in
the ORM, and the retention sweep applies them to a month's rows before its
DROP (dispatcher.partitions._drop).
"""

import django.db.models.deletion
from django.db import migrations, models

from dispatcher import partitions


def partition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        partitions.partition_tables(schema_editor.connection)


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        partitions.unpartition_tables(schema_editor.connection)


SET_NULL = django.db.models.deletion.SET_NULL
CASCADE = django.db.models.deletion.CASCADE
_without_constraints = [
    migrations.AlterField(model_name=model, name=name, field=field) for model, name, field in (
        ("suppression", "dispatch", models.ForeignKey(
            blank=True, null=True, db_constraint=False, on_delete=SET_NULL, related_name="+",
            to="dispatcher.dispatch")),
        ("deliveryreceipt", "dispatch", models.ForeignKey(
            db_constraint=False, on_delete=CASCADE, related_name="receipts", to="dispatcher.dispatch")),
        ("fallbackhop", "dispatch", models.OneToOneField(
            db_constraint=False, on_delete=CASCADE, primary_key=True, related_name="fallback",
            serialize=False, to="dispatcher.dispatch")),
        ("fallbackhop", "previous", models.ForeignKey(
            blank=True, null=True, db_constraint=False, on_delete=SET_NULL, related_name="+",
            to="dispatcher.dispatch")),
        ("fallbackhop", "next", models.ForeignKey(
            blank=True, null=True, db_constraint=False, on_delete=SET_NULL, related_name="+",
            to="dispatcher.dispatch")),
        ("digestwindow", "dispatch", models.ForeignKey(
            blank=True, null=True, db_constraint=False, on_delete=SET_NULL, related_name="+",
            to="dispatcher.dispatch")),
    )
]


class Migration(migrations.Migration):

    dependencies = [
        ('dispatcher', '0007_beyond'),
    ]

    operations = [
        migrations.AlterField(
            model_name='dispatcherror',
            name='dispatch',
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='errors', to='dispatcher.dispatch'),
        ),
        *_without_constraints,
        migrations.RunPython(partition, unpartition),
    ]
