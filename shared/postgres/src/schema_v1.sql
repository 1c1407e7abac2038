-- Keelson PostgreSQL schema, version 1: the SQLite schema's tables, ported.
-- Times are milliseconds since the Unix epoch (BIGINT), as in every store.
-- Text columns are COLLATE "C": listings are ordered by bytes, like the
-- memory and SQLite stores, whatever locale the database was created with.
-- Documents are `json`, not `jsonb`: it keeps the text serde wrote (key
-- order, number spelling), so numbers compare as their JSON text in type
-- queries exactly as `query::field_text` renders them.

-- The datastore. `seq` is the storage order: of events with equal times the
-- later stored is the newer, and the root is the first stored. `is_root`
-- marks the root (earliest event) of its shkeptncontext; writers of a
-- context hold its advisory lock while they move it.
CREATE TABLE events (
    seq            BIGSERIAL PRIMARY KEY,
    id             TEXT COLLATE "C" NOT NULL UNIQUE,
    time_ms        BIGINT  NOT NULL,
    type           TEXT COLLATE "C" NOT NULL,
    project        TEXT COLLATE "C",
    stage          TEXT COLLATE "C",
    service        TEXT COLLATE "C",
    shkeptncontext TEXT COLLATE "C" NOT NULL,
    triggeredid    TEXT COLLATE "C",
    source         TEXT COLLATE "C" NOT NULL,
    is_root        BOOLEAN NOT NULL DEFAULT FALSE,
    doc            JSON    NOT NULL
);
CREATE INDEX events_context ON events (shkeptncontext, time_ms, seq);
CREATE INDEX events_project ON events (project, time_ms, seq);
CREATE INDEX events_type ON events (type, time_ms, seq);
CREATE INDEX events_time ON events (time_ms, seq);
CREATE INDEX events_triggeredid ON events (triggeredid) WHERE triggeredid IS NOT NULL;
CREATE INDEX events_root_time ON events (time_ms, seq) WHERE is_root;
CREATE INDEX events_root_project ON events (project, time_ms, seq) WHERE is_root;
-- Type queries scoped to one service (the lighthouse's previous evaluations).
CREATE INDEX events_type_scope ON events (type, project, stage, service, time_ms, seq);

-- `commits` counts the project's commits: incrementing it is how a writer
-- takes the next commit number (and the project row's lock) in one statement.
CREATE TABLE projects (
    name    TEXT COLLATE "C" PRIMARY KEY,
    version BIGINT NOT NULL,
    commits BIGINT NOT NULL DEFAULT 0,
    doc     JSON   NOT NULL
);

-- A project's linear history: `seq` counts from 1.
CREATE TABLE commits (
    project TEXT COLLATE "C" NOT NULL,
    seq     BIGINT NOT NULL,
    id      TEXT COLLATE "C" NOT NULL,
    time_ms BIGINT NOT NULL,
    PRIMARY KEY (project, seq),
    UNIQUE (project, id)
);

-- One row per change of a resource; NULL content is a deletion.
CREATE TABLE resources (
    project TEXT COLLATE "C" NOT NULL,
    scope   TEXT COLLATE "C" NOT NULL,
    uri     TEXT COLLATE "C" NOT NULL,
    seq     BIGINT NOT NULL,
    content BYTEA,
    PRIMARY KEY (project, scope, uri, seq)
);

CREATE TABLE lanes (
    project     TEXT COLLATE "C" NOT NULL,
    stage       TEXT COLLATE "C" NOT NULL,
    service     TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL,
    state       JSON   NOT NULL,
    next_wakeup BIGINT,
    PRIMARY KEY (project, stage, service)
);
CREATE INDEX lanes_wakeup ON lanes (next_wakeup) WHERE next_wakeup IS NOT NULL;

CREATE TABLE applied (
    consumer   TEXT COLLATE "C" NOT NULL,
    cause_id   TEXT COLLATE "C" NOT NULL,
    effects    JSON   NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, cause_id)
);
CREATE INDEX applied_age ON applied (applied_at);
CREATE INDEX applied_consumer_age ON applied (consumer, applied_at);

CREATE TABLE executions (
    id            TEXT COLLATE "C" PRIMARY KEY,
    project       TEXT COLLATE "C" NOT NULL,
    stage         TEXT COLLATE "C" NOT NULL,
    service       TEXT COLLATE "C" NOT NULL,
    keptn_context TEXT COLLATE "C" NOT NULL,
    triggered_at  BIGINT  NOT NULL,
    active        BOOLEAN NOT NULL,
    doc           JSON    NOT NULL
);
CREATE INDEX executions_project ON executions (project, triggered_at, id);
CREATE INDEX executions_context ON executions (keptn_context);

-- Open task triggers per lane (replaced on every lane commit).
CREATE TABLE open_triggers (
    lane_project TEXT COLLATE "C" NOT NULL,
    lane_stage   TEXT COLLATE "C" NOT NULL,
    lane_service TEXT COLLATE "C" NOT NULL,
    event_id     TEXT COLLATE "C" NOT NULL,
    type         TEXT COLLATE "C" NOT NULL,
    project      TEXT COLLATE "C",
    stage        TEXT COLLATE "C",
    service      TEXT COLLATE "C",
    time_ms      BIGINT NOT NULL,
    doc          JSON   NOT NULL,
    PRIMARY KEY (lane_project, lane_stage, lane_service, event_id)
);
CREATE INDEX open_triggers_type ON open_triggers (type, time_ms, event_id);

-- Pause marks; stage '' marks the whole context.
CREATE TABLE pauses (
    project       TEXT COLLATE "C" NOT NULL,
    keptn_context TEXT COLLATE "C" NOT NULL,
    stage         TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (project, keptn_context, stage)
);

CREATE TABLE integrations (
    id   TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    doc  JSON NOT NULL
);
