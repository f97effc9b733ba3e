"""Counts kept as dispatches change (see dispatcher.counters), and indexes for
the admin's filters.

DispatchCounter is created, the triggers that keep it are installed, and it is
filled with one real count of both tables (a scan: seconds at ten million
rows, in the migration's transaction). The (messenger, status) index, which
only served counting, gives way to (status, id) and (messenger, id), which
serve the admin's list filtered by status or by messenger newest first, and to
a partial index of failed and erroring rows for the dashboard's latest
failures.
"""

from django.db import migrations, models

from dispatcher import counters


def install(apps, schema_editor):
    counters.install(schema_editor.connection)
    counters.reconcile(using=schema_editor.connection.alias)


def uninstall(apps, schema_editor):
    counters.uninstall(schema_editor.connection)


class Migration(migrations.Migration):

    dependencies = [
        ('dispatcher', '0008_partitioned_history'),
    ]

    operations = [
        migrations.CreateModel(
            name='DispatchCounter',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('dispatch', 'Dispatch'), ('error', 'Error')], max_length=10)),
                ('messenger', models.CharField(max_length=50)),
                ('status', models.CharField(max_length=20)),
                ('day', models.DateField()),
                ('n', models.BigIntegerField()),
            ],
        ),
        migrations.RemoveIndex(
            model_name='dispatch',
            name='dispatch_messenger_idx',
        ),
        migrations.AddIndex(
            model_name='dispatch',
            index=models.Index(fields=['status', 'id'], name='dispatch_status_id_idx'),
        ),
        migrations.AddIndex(
            model_name='dispatch',
            index=models.Index(fields=['messenger', 'id'], name='dispatch_messenger_id_idx'),
        ),
        migrations.AddIndex(
            model_name='dispatch',
            index=models.Index(condition=models.Q(('status__in', ['failed', 'error'])), fields=['id'], name='dispatch_failures_idx'),
        ),
        migrations.AddIndex(
            model_name='dispatchcounter',
            index=models.Index(fields=['kind', 'messenger', 'status', 'day'], name='dispatch_counter_key_idx'),
        ),
        migrations.RunPython(install, uninstall),
    ]
