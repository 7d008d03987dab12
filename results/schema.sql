-- kvbench results database. Migration N takes a file from PRAGMA user_version N-1 to N; each
-- starts at its "-- migration N" line. Compiled into kvbench at build time (CMakeLists.txt,
-- results/schema_sql.cpp.in) and applied by results/sqlite_store.cpp.
-- migration 1
PRAGMA application_id = 1263944241;
CREATE TABLE runs (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  config_hash TEXT NOT NULL,
  suite_name TEXT NOT NULL,
  git_commit TEXT NOT NULL,
  git_dirty INTEGER NOT NULL,
  build_type TEXT NOT NULL,
  compiler TEXT NOT NULL,
  torch_version TEXT NOT NULL,
  device TEXT NOT NULL,
  threads INTEGER NOT NULL,
  host TEXT NOT NULL,
  started_at TEXT NOT NULL,
  ended_at TEXT,
  seed INTEGER NOT NULL,
  config TEXT NOT NULL,
  UNIQUE (name, config_hash)
);
CREATE TABLE models (
  id INTEGER PRIMARY KEY,
  path TEXT NOT NULL,
  weights_hash TEXT NOT NULL,
  config TEXT NOT NULL,
  UNIQUE (path, weights_hash)
);
CREATE TABLE methods (
  id INTEGER PRIMARY KEY,
  spec TEXT NOT NULL UNIQUE
);
CREATE TABLE datasets (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  content_hash TEXT NOT NULL,
  spec TEXT NOT NULL,
  UNIQUE (name, content_hash)
);
CREATE TABLE cells (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs (id),
  key TEXT NOT NULL,
  suite TEXT NOT NULL,
  model_id INTEGER NOT NULL REFERENCES models (id),
  method_id INTEGER NOT NULL REFERENCES methods (id),
  dataset_id INTEGER NOT NULL REFERENCES datasets (id),
  params TEXT NOT NULL,
  finished_at TEXT NOT NULL,
  record TEXT NOT NULL,
  UNIQUE (run_id, key)
);
CREATE TABLE samples (
  cell_id INTEGER NOT NULL REFERENCES cells (id),
  idx INTEGER NOT NULL,
  turn INTEGER NOT NULL,
  input_hash TEXT NOT NULL,
  prediction TEXT NOT NULL,
  score REAL NOT NULL,
  tokens INTEGER,
  PRIMARY KEY (cell_id, idx, turn)
);
CREATE TABLE metrics (
  cell_id INTEGER NOT NULL REFERENCES cells (id),
  name TEXT NOT NULL,
  value REAL NOT NULL,
  se REAL,
  PRIMARY KEY (cell_id, name)
);
CREATE TABLE memory (
  cell_id INTEGER PRIMARY KEY REFERENCES cells (id),
  payload_bytes INTEGER NOT NULL,
  metadata_bytes INTEGER NOT NULL,
  tokens INTEGER NOT NULL,
  bits_per_token REAL NOT NULL
);
-- migration 2: the CUDA runtime of the build, the memory a method promised next to what it
-- held, and timings of kernels and engine phases.
ALTER TABLE runs ADD COLUMN cuda_version TEXT NOT NULL DEFAULT '';
ALTER TABLE memory ADD COLUMN promised_bytes INTEGER;
CREATE TABLE kernel_timings (
  run_id INTEGER NOT NULL REFERENCES runs (id),
  cell_key TEXT NOT NULL,
  name TEXT NOT NULL,
  shape TEXT NOT NULL,
  device TEXT NOT NULL,
  reps INTEGER NOT NULL,
  median_ms REAL NOT NULL,
  min_ms REAL NOT NULL,
  max_ms REAL NOT NULL,
  bytes_moved INTEGER,
  gbps REAL,
  gflops REAL,
  roofline_fraction REAL,
  PRIMARY KEY (run_id, cell_key, name, shape, device)
);
-- migration 3: the bytes a method's cache read per decode step next to what it held (Quest
-- holds every token and reads a few pages; NULL in rows from before version 3).
ALTER TABLE memory ADD COLUMN read_bytes_per_step INTEGER;
