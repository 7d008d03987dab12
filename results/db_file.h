// The file under a kvbench results database, shared by every command that opens one: who may
// write it, how it is read without leaving anything behind, and the checks made on its bytes
// before SQLite reads them.
//
// Writers. `run`, `merge` (its OUT) and `import-bench` are the commands that write a database;
// each holds DbLock::exclusive() on it from before its first read until after its last write. A
// second writer on the same file is refused at once: kvb::InputError "<db>: database is in use
// by another kvbench process (pid N)" (exit 2), before it has read or written anything. Waiting
// instead was not chosen: two runs of one config would compute the same cells twice, and a run
// lasts hours. The lock is an open-file-description lock (fcntl F_OFD_SETLK) on a byte far beyond
// any SQLite uses (SQLite's own locks sit at 1 GiB), on the database file itself: it leaves no
// file behind, the kernel drops it when the process dies (SIGKILL included), and it does not mix
// with SQLite's POSIX locks. The holder also locks byte base + 1 + its pid, which is how the
// refused process names it.
//
// Journal mode. A database at rest is in rollback-journal mode (journal_mode=DELETE): SQLite
// opens such a file read-only without creating any file, whereas a WAL-mode file opened
// read-only gets a -wal and a -shm that a read-only connection cannot remove. A writer switches
// the file to WAL before its first write (readers are then never blocked by it, and the cells of
// a killed run stay readable from the -wal) and back to DELETE when it closes.
//
// The lock is released when the DbLock is destroyed: only after every SQLite connection on the
// file in this process is closed, since closing any descriptor of a file drops the POSIX locks
// the process holds on it, SQLite's included.
//
// Readers (`export`, `compare`, `leaderboard`, `report`, and the checks every writer makes
// first) open the file SQLITE_OPEN_READONLY: a rollback-mode file as it is; a WAL-mode file with
// its -wal present (a writer at work, or one killed) through the -wal and -shm already there;
// a WAL-mode file without a -wal (written by an earlier kvbench, which left files at rest in
// WAL mode) with `immutable=1` while holding DbLock::try_shared(), so that no writer can start
// meanwhile and nothing is created.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

struct sqlite3;

namespace kvb {

class DbLock {
 public:
  // The writer's lock on `path`, creating the file (empty, and its directory) when absent.
  // kvb::InputError "<path>: ..." when another process holds it, or the file cannot be opened
  // for writing or is not a regular file.
  static DbLock exclusive(const std::string& path);
  // A reader's shared lock, without waiting: nullopt while a writer holds the exclusive one.
  static std::optional<DbLock> try_shared(const std::string& path);
  // A shared lock for a database read while it must not change (merge's inputs): as
  // try_shared(), but the writer holding it is an error, as in exclusive().
  static DbLock shared(const std::string& path);

  DbLock(DbLock&& o) noexcept;
  DbLock& operator=(DbLock&& o) noexcept;
  DbLock(const DbLock&) = delete;
  DbLock& operator=(const DbLock&) = delete;
  ~DbLock();

  const std::string& path() const { return path_; }
  // Whether exclusive() created the file.
  bool created() const { return created_; }

 private:
  DbLock(std::string path, int fd, bool created)
      : path_(std::move(path)), fd_(fd), created_(created) {}
  std::string path_;
  int fd_ = -1;
  bool created_ = false;
};

// What the bytes of a database file say, checked without SQLite (check_db_file()).
struct DbFileInfo {
  bool present = false;  // exists and is not empty
  bool wal = false;      // the header says WAL mode
  int64_t size = 0;
};

// Checks `path` as bytes: absent or empty is fine (present = false); otherwise a regular file
// starting with the SQLite magic, a valid page size and format bytes, a size that is a whole
// number of pages and (without a -wal beside it) the page count its header records. A file cut
// short by a byte or a page fails here, before SQLite reads it. kvb::InputError "<path>: ...".
DbFileInfo check_db_file(const std::string& path);

// A read-only SQLite connection on `path` (checked by check_db_file, present) that creates no
// file (see "Readers" above), with a busy timeout. `lock` is the caller's exclusive lock on the
// file, if it holds one; otherwise a WAL-mode file without its -wal is read under a shared lock
// taken here and returned through `shared`. kvb::InputError "<path>: cannot open: ..." on
// failure.
sqlite3* open_db_readonly(const std::string& path, const DbFileInfo& info, const DbLock* lock,
                          std::optional<DbLock>* shared);

// "file:///abs/path?<query>": `path` as an SQLite URI filename (open with SQLITE_OPEN_URI), so
// that no path is ever taken for a URI by accident; `query` e.g. "mode=ro&immutable=1".
std::string sqlite_uri(const std::string& path, const std::string& query);

// How long a connection waits for a lock SQLite holds (a writer's commit) before giving up.
inline constexpr int kBusyTimeoutMs = 10000;

// "<path>: <what SQLite said>", one line; for the errors of a statement on a database file.
// SQLITE_BUSY reads "database is locked by another process", a hot journal "a write was
// interrupted ...".
std::string sqlite_problem(sqlite3* db, const std::string& path);

}  // namespace kvb
