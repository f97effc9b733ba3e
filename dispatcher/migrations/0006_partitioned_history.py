"""Partition the dispatch history by month on PostgreSQL (see dispatcher.partitions).

The tables are renamed, created again as partitioned tables with the same
columns, constraints and indexes, the rows copied in chunks, the old tables
dropped, the id sequences set after the copied rows. It runs in the
migration's transaction: all or nothing. Stop the workers, beat and the web
processes while it runs (it takes the tables' exclusive locks; see
docs/deployment.md, "Capacity", for how long it takes). On SQLite only the
foreign-key constraint of DispatchError.dispatch goes.
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


class Migration(migrations.Migration):

    dependencies = [
        ('dispatcher', '0005_dispatch_result'),
    ]

    operations = [
        migrations.AlterField(
            model_name='dispatcherror',
            name='dispatch',
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='errors', to='dispatcher.dispatch'),
        ),
        migrations.RunPython(partition, unpartition),
    ]
