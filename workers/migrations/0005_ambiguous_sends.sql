-- When a send's last SES call ended without telling whether SES accepted the message (a read
-- timeout, or a worker lost mid-call whose claim was taken over). Before sending again, the
-- worker looks for SES's Send notification carrying the send_id tag in reporting.email_events.
ALTER TABLE sends ADD COLUMN ambiguous_at timestamptz;

-- The lookup before an ambiguous send is retried.
CREATE INDEX email_events_send ON reporting.email_events (send_id, event_type) WHERE send_id IS NOT NULL;
