-- Follow-ups, dates and inactivity: sends that are not caused by one event, and fast scans.

-- Date and inactivity sends have no event; their synthetic event lives on the send.
ALTER TABLE sends ALTER COLUMN event_id DROP NOT NULL;
ALTER TABLE sends ADD COLUMN payload jsonb;
ALTER TABLE sends ADD CONSTRAINT sends_has_event CHECK (event_id IS NOT NULL OR payload IS NOT NULL);

-- The dispatcher claims due scheduled sends in due order.
CREATE INDEX sends_scheduled ON sends (due_at) WHERE state = 'scheduled';
-- Exit conditions and cancellations look up what a contact still has pending.
CREATE INDEX sends_contact_open ON sends (contact_id, flow) WHERE state IN ('scheduled', 'pending', 'retry');
CREATE INDEX contacts_last_activity ON contacts (last_activity_at);
