-- A claim writes its placement in one statement, taking the epoch as the counter plus one;
-- these triggers then raise the counter to that epoch in the same transaction, so epochs are
-- still never reused. A placement written with an epoch the counter already covers (a
-- snapshot being imported, say) leaves the counter alone.
CREATE TRIGGER placements_raise_epoch_on_insert AFTER INSERT ON placements
BEGIN
    UPDATE counters SET value = NEW.epoch WHERE name = 'epoch' AND value < NEW.epoch;
END;

CREATE TRIGGER placements_raise_epoch_on_update AFTER UPDATE OF epoch ON placements
BEGIN
    UPDATE counters SET value = NEW.epoch WHERE name = 'epoch' AND value < NEW.epoch;
END;
