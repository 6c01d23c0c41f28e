-- a store written by tanji with schema version 5 (commit ea23a86), as `sqlite3 .dump`
-- prints it: tests/unit/test_store.py brings it forward to the current version
BEGIN TRANSACTION;
CREATE TABLE activity_records (
    record_id    TEXT PRIMARY KEY,
    meter_id     TEXT    NOT NULL,
    point        TEXT    NOT NULL,
    period_start_ns INTEGER NOT NULL,
    period_end_ns   INTEGER NOT NULL,
    revision     INTEGER NOT NULL,
    record_json  TEXT    NOT NULL,
    created_ns   INTEGER NOT NULL,
    batch_id     TEXT    NOT NULL,  -- the outbox batch (cloud_sync) that carries it
    UNIQUE (meter_id, point, period_start_ns, revision)
);
CREATE TABLE cursors (  -- how far a reader of new readings got: the InfluxDB
                                     -- mirror, the aggregator's check for late readings
    name             TEXT PRIMARY KEY,
    last_reading_id  INTEGER NOT NULL
);
INSERT INTO "cursors" VALUES('mirror',2);
CREATE TABLE readings (
    id           INTEGER PRIMARY KEY,
    series       INTEGER NOT NULL,  -- series.id, guaranteed by register_series (a declared
                                    -- foreign key would cost a lookup on every insert)
    ts_ns        INTEGER NOT NULL,
    source_ts_ns INTEGER,
    raw          BLOB    NOT NULL,
    value        TEXT,             -- exact decimal as text, NULL when quality is bad
    quality      TEXT    NOT NULL,
    reason       TEXT
);
INSERT INTO "readings" VALUES(1,1,1764028800000000000,NULL,X'0001E240','1234.5','good',NULL);
INSERT INTO "readings" VALUES(2,1,1764028805000000000,NULL,X'',NULL,'bad','timeout');
INSERT INTO "readings" VALUES(3,2,1764028805000000001,1764028804990000000,X'0702000000','2','good',NULL);
CREATE TABLE series (
    id           INTEGER PRIMARY KEY,  -- one point of one meter
    meter_id     TEXT    NOT NULL,
    point        TEXT    NOT NULL,
    quantity     TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    unit         TEXT    NOT NULL,
    evicted_before INTEGER NOT NULL DEFAULT 0,  -- readings before this may have been deleted
    UNIQUE (meter_id, point)
);
INSERT INTO "series" VALUES(1,'M1','active_energy_import','active_energy_import','counter','kWh',0);
INSERT INTO "series" VALUES(2,'P1','units','production_count','counter','unit',0);
CREATE TABLE set_aside (  -- readings kept as evidence but not aggregated
    reading_id   INTEGER PRIMARY KEY,
    reason       TEXT    NOT NULL,
    at_ns        INTEGER NOT NULL
);
CREATE INDEX readings_series_ts ON readings (series, ts_ns)
;
COMMIT;
