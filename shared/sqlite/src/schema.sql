-- Keelson SQLite schema, version 1. Times are milliseconds since the Unix epoch.

-- The datastore. `seq` is the storage order (a new row's seq exceeds every stored
-- one): of events with equal times the later stored is the newer, and the root
-- is the first stored. `is_root` marks the root (earliest event) of its shkeptncontext.
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY,
    id             TEXT    NOT NULL UNIQUE,
    time           INTEGER NOT NULL,
    type           TEXT    NOT NULL,
    project        TEXT,
    stage          TEXT,
    service        TEXT,
    shkeptncontext TEXT    NOT NULL,
    triggeredid    TEXT,
    source         TEXT    NOT NULL,
    is_root        INTEGER NOT NULL DEFAULT 0,
    json           TEXT    NOT NULL
);
CREATE INDEX events_context ON events (shkeptncontext, time);
CREATE INDEX events_project ON events (project, time);
CREATE INDEX events_type ON events (type, time);
CREATE INDEX events_time ON events (time);
CREATE INDEX events_triggeredid ON events (triggeredid) WHERE triggeredid IS NOT NULL;
CREATE INDEX events_root_time ON events (time) WHERE is_root = 1;
CREATE INDEX events_root_project ON events (project, time) WHERE is_root = 1;

CREATE TABLE projects (
    name    TEXT    PRIMARY KEY,
    version INTEGER NOT NULL,
    json    TEXT    NOT NULL
);

-- A project's linear history: `seq` counts from 1.
CREATE TABLE commits (
    project TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    id      TEXT    NOT NULL,
    time    INTEGER NOT NULL,
    PRIMARY KEY (project, seq),
    UNIQUE (project, id)
);

-- One row per change of a resource; NULL content is a deletion.
CREATE TABLE resources (
    project TEXT    NOT NULL,
    scope   TEXT    NOT NULL,
    uri     TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    content BLOB,
    PRIMARY KEY (project, scope, uri, seq)
);

CREATE TABLE lanes (
    project     TEXT    NOT NULL,
    stage       TEXT    NOT NULL,
    service     TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    next_wakeup INTEGER,
    PRIMARY KEY (project, stage, service)
);
CREATE INDEX lanes_wakeup ON lanes (next_wakeup) WHERE next_wakeup IS NOT NULL;

CREATE TABLE applied (
    consumer   TEXT    NOT NULL,
    cause_id   TEXT    NOT NULL,
    effects    TEXT    NOT NULL,
    applied_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, cause_id)
) WITHOUT ROWID;
CREATE INDEX applied_age ON applied (applied_at);

CREATE TABLE executions (
    id            TEXT    PRIMARY KEY,
    project       TEXT    NOT NULL,
    stage         TEXT    NOT NULL,
    service       TEXT    NOT NULL,
    keptn_context TEXT    NOT NULL,
    triggered_at  INTEGER NOT NULL,
    active        INTEGER NOT NULL,
    json          TEXT    NOT NULL
);
CREATE INDEX executions_project ON executions (project, triggered_at, id);
CREATE INDEX executions_context ON executions (keptn_context);

-- Open task triggers per lane (replaced on every lane commit).
CREATE TABLE open_triggers (
    lane_project TEXT    NOT NULL,
    lane_stage   TEXT    NOT NULL,
    lane_service TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    type         TEXT    NOT NULL,
    project      TEXT,
    stage        TEXT,
    service      TEXT,
    time         INTEGER NOT NULL,
    json         TEXT    NOT NULL,
    PRIMARY KEY (lane_project, lane_stage, lane_service, event_id)
);
CREATE INDEX open_triggers_type ON open_triggers (type, time);

-- Pause marks; stage '' marks the whole context.
CREATE TABLE pauses (
    project       TEXT NOT NULL,
    keptn_context TEXT NOT NULL,
    stage         TEXT NOT NULL,
    PRIMARY KEY (project, keptn_context, stage)
) WITHOUT ROWID;

CREATE TABLE integrations (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    json TEXT NOT NULL
);

-- The bus: one row per (consumer, event); the receipt is `seq`, never reused.
CREATE TABLE queue (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer TEXT NOT NULL,
    json     TEXT NOT NULL
);
CREATE INDEX queue_consumer ON queue (consumer, seq);

CREATE TABLE dead_letters (
    seq      INTEGER PRIMARY KEY,
    consumer TEXT NOT NULL,
    json     TEXT NOT NULL,
    reason   TEXT NOT NULL
);
CREATE INDEX dead_letters_consumer ON dead_letters (consumer, seq);
