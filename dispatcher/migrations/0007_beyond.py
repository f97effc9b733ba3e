# Digests, throttle keys, fallback chains, delivery receipts and the suppression list (docs/beyond.md).

import django.db.models.deletion
import django.db.models.fields.json
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('dispatcher', '0006_flow_counters'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ChannelPreference',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('message_type', models.CharField(blank=True, default='', max_length=100)),
                ('channels', models.JSONField(default=list)),
            ],
        ),
        migrations.CreateModel(
            name='DeliveryReceipt',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('event', models.CharField(choices=[('delivered', 'Delivered'), ('bounced', 'Bounced'), ('complained', 'Complained')], max_length=20)),
                ('provider', models.CharField(max_length=30)),
                ('occurred_at', models.DateTimeField()),
                ('reason', models.TextField(blank=True, default='')),
                ('permanent', models.BooleanField(default=False)),
                ('payload', models.JSONField(blank=True, default=dict)),
                ('created', models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                'ordering': ['-id'],
            },
        ),
        migrations.CreateModel(
            name='DigestItem',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('context', models.JSONField(default=dict)),
                ('created', models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                'ordering': ['id'],
            },
        ),
        migrations.CreateModel(
            name='DigestWindow',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('message_type', models.CharField(max_length=100)),
                ('messenger', models.CharField(max_length=50)),
                ('address', models.CharField(max_length=500)),
                ('status', models.CharField(choices=[('open', 'Open'), ('closed', 'Closed')], default='open', max_length=10)),
                ('opened_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('closes_at', models.DateTimeField()),
                ('item_count', models.PositiveIntegerField(default=0)),
                ('closed_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'ordering': ['-id'],
            },
        ),
        migrations.CreateModel(
            name='FallbackHop',
            fields=[
                ('dispatch', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='fallback', serialize=False, to='dispatcher.dispatch')),
                ('chain', models.JSONField(default=list)),
                ('position', models.PositiveSmallIntegerField(default=0)),
                ('fell_back_at', models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name='Suppression',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(max_length=50)),
                ('address', models.CharField(max_length=500)),
                ('message_type', models.CharField(blank=True, default='', max_length=100)),
                ('reason', models.CharField(choices=[('bounce', 'Bounce'), ('complaint', 'Complaint'), ('unsubscribe', 'Unsubscribe'), ('manual', 'Manual')], default='manual', max_length=20)),
                ('detail', models.TextField(blank=True, default='')),
                ('created', models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                'ordering': ['-id'],
            },
        ),
        migrations.CreateModel(
            name='ThrottleMark',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.CharField(max_length=200)),
                ('messenger', models.CharField(max_length=50)),
                ('address', models.CharField(max_length=500)),
                ('until', models.DateTimeField()),
            ],
        ),
        migrations.AlterField(
            model_name='dispatch',
            name='status',
            field=models.CharField(choices=[('pending', 'Pending'), ('processing', 'Processing'), ('sent', 'Sent'), ('error', 'Error'), ('failed', 'Failed'), ('cancelled', 'Cancelled'), ('skipped', 'Skipped')], default='pending', max_length=10),
        ),
        migrations.AddIndex(
            model_name='dispatch',
            index=models.Index(django.db.models.fields.json.KeyTextTransform('message_id', 'result'), condition=models.Q(('result__isnull', False)), name='dispatch_result_message_id_idx'),
        ),
        migrations.AddIndex(
            model_name='dispatch',
            index=models.Index(django.db.models.fields.json.KeyTextTransform('sid', 'result'), condition=models.Q(('result__isnull', False)), name='dispatch_result_sid_idx'),
        ),
        migrations.AddIndex(
            model_name='dispatch',
            index=models.Index(condition=models.Q(('status', 'skipped')), fields=['created'], name='dispatch_skipped_idx'),
        ),
        migrations.AddField(
            model_name='channelpreference',
            name='user',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='deliveryreceipt',
            name='dispatch',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='receipts', to='dispatcher.dispatch'),
        ),
        migrations.AddField(
            model_name='digestwindow',
            name='dispatch',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='dispatcher.dispatch'),
        ),
        migrations.AddField(
            model_name='digestwindow',
            name='message',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='dispatcher.message'),
        ),
        migrations.AddField(
            model_name='digestwindow',
            name='recipient',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='digestitem',
            name='window',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='items', to='dispatcher.digestwindow'),
        ),
        migrations.AddField(
            model_name='fallbackhop',
            name='next',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='dispatcher.dispatch'),
        ),
        migrations.AddField(
            model_name='fallbackhop',
            name='previous',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='dispatcher.dispatch'),
        ),
        migrations.AddField(
            model_name='suppression',
            name='dispatch',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='dispatcher.dispatch'),
        ),
        migrations.AddIndex(
            model_name='throttlemark',
            index=models.Index(fields=['until'], name='throttle_until_idx'),
        ),
        migrations.AddConstraint(
            model_name='throttlemark',
            constraint=models.UniqueConstraint(fields=('key', 'messenger', 'address'), name='throttle_unique'),
        ),
        migrations.AddConstraint(
            model_name='channelpreference',
            constraint=models.UniqueConstraint(fields=('user', 'message_type'), name='channel_preference_unique'),
        ),
        migrations.AddIndex(
            model_name='deliveryreceipt',
            index=models.Index(fields=['created', 'event'], name='receipt_created_idx'),
        ),
        migrations.AddConstraint(
            model_name='deliveryreceipt',
            constraint=models.UniqueConstraint(fields=('dispatch', 'event'), name='receipt_once_per_event'),
        ),
        migrations.AddIndex(
            model_name='digestwindow',
            index=models.Index(condition=models.Q(('status', 'open')), fields=['closes_at'], name='digest_due_idx'),
        ),
        migrations.AddConstraint(
            model_name='digestwindow',
            constraint=models.UniqueConstraint(condition=models.Q(('status', 'open')), fields=('message_type', 'messenger', 'address'), name='digest_one_open_window'),
        ),
        migrations.AddIndex(
            model_name='digestitem',
            index=models.Index(fields=['created'], name='digest_item_created_idx'),
        ),
        migrations.AddIndex(
            model_name='fallbackhop',
            index=models.Index(condition=models.Q(('fell_back_at__isnull', False)), fields=['fell_back_at'], name='fallback_fell_back_idx'),
        ),
        migrations.AddConstraint(
            model_name='suppression',
            constraint=models.UniqueConstraint(fields=('kind', 'address', 'message_type'), name='suppression_unique'),
        ),
    ]
