#include "results/db_file.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/check.h"
#include "common/error_text.h"

namespace kvb {
namespace fs = std::filesystem;

namespace {

// The lock byte and, after it, one byte per pid that a holder locks to be named by.
constexpr off_t kLockBase = off_t{1} << 40;
constexpr off_t kPidSlots = off_t{1} << 23;  // pid_max is at most 2^22

#ifdef F_OFD_SETLK
bool ofd_lock(int fd, short type, off_t start, off_t len) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  return ::fcntl(fd, F_OFD_SETLK, &fl) == 0;
}

// The pid of a process holding a lock on `fd`'s file, 0 when none is found.
pid_t lock_holder(int fd) {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = kLockBase + 1;
  fl.l_len = kPidSlots;
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0 || fl.l_type == F_UNLCK) return 0;
  return static_cast<pid_t>(fl.l_start - kLockBase - 1);
}

[[noreturn]] void cannot_lock(const std::string& path, int fd) {
  const int e = errno;
  ::close(fd);
  throw InputError(path + ": cannot lock the database: " + std::strerror(e) +
                   " (a file system without locks?)");
}

// Takes the lock byte (F_WRLCK or F_RDLCK) and the pid slot; false when another holds it.
bool take(int fd, short type, const std::string& path) {
  if (!ofd_lock(fd, type, kLockBase, 1)) {
    if (errno == EAGAIN || errno == EACCES) return false;
    cannot_lock(path, fd);
  }
  ofd_lock(fd, F_RDLCK, kLockBase + 1 + ::getpid(), 1);  // only names us; best effort
  return true;
}
#else
pid_t lock_holder(int) { return 0; }
bool take(int fd, short type, const std::string& path) {
  if (::flock(fd, (type == F_WRLCK ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) return true;
  if (errno == EWOULDBLOCK) return false;
  const int e = errno;
  ::close(fd);
  throw InputError(path + ": cannot lock the database: " + std::strerror(e));
}
#endif

[[noreturn]] void in_use(const std::string& path, int fd) {
  const pid_t pid = lock_holder(fd);
  ::close(fd);
  throw InputError(path + ": database is in use by another kvbench process" +
                   (pid > 0 ? " (pid " + std::to_string(pid) + ")" : std::string()) +
                   "; try again when it has finished");
}

bool same_file(int fd, const std::string& path) {
  struct stat a {
  }, b{};
  return ::fstat(fd, &a) == 0 && ::stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

uint32_t be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

}  // namespace

std::string sqlite_uri(const std::string& path, const std::string& query) {
  std::string uri = "file://";
  for (unsigned char c : fs::absolute(path).string()) {
    if (c == '%' || c == '?' || c == '#' || c <= 0x20 || c >= 0x7F) {
      char b[4];
      std::snprintf(b, sizeof b, "%%%02X", c);
      uri += b;
    } else {
      uri += static_cast<char>(c);
    }
  }
  return uri + "?" + query;
}

DbLock DbLock::exclusive(const std::string& path) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    struct stat st {};
    const bool existed = ::stat(path.c_str(), &st) == 0;
    KVB_INPUT_CHECK(!existed || S_ISREG(st.st_mode), path, ": not a regular file");
    if (!existed) {
      const fs::path parent = fs::path(path).parent_path();
      std::error_code ec;
      if (!parent.empty()) fs::create_directories(parent, ec);
    }
    const int fd =
        ::open(path.c_str(), O_RDWR | O_CLOEXEC | (existed ? 0 : O_CREAT | O_EXCL), 0644);
    if (fd < 0) {
      if ((errno == EEXIST && !existed) || (errno == ENOENT && existed)) continue;  // raced
      throw InputError(path + ": cannot open for writing: " + std::strerror(errno));
    }
    if (!take(fd, F_WRLCK, path)) in_use(path, fd);
    // Another writer may have removed a file it had created while this one waited to lock it.
    if (!same_file(fd, path)) {
      ::close(fd);
      continue;
    }
    return DbLock(path, fd, !existed);
  }
  throw InputError(path + ": the file kept changing while it was being opened; try again");
}

namespace {

int open_for_reading(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(path + ": not a regular file");
  }
  return fd;
}

}  // namespace

std::optional<DbLock> DbLock::try_shared(const std::string& path) {
  const int fd = open_for_reading(path);
  if (!take(fd, F_RDLCK, path)) {
    ::close(fd);
    return std::nullopt;
  }
  return DbLock(path, fd, false);
}

DbLock DbLock::shared(const std::string& path) {
  const int fd = open_for_reading(path);
  if (!take(fd, F_RDLCK, path)) in_use(path, fd);
  return DbLock(path, fd, false);
}

DbLock::DbLock(DbLock&& o) noexcept : path_(std::move(o.path_)), fd_(o.fd_), created_(o.created_) {
  o.fd_ = -1;
}

DbLock& DbLock::operator=(DbLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    fd_ = o.fd_;
    created_ = o.created_;
    o.fd_ = -1;
  }
  return *this;
}

DbLock::~DbLock() {
  if (fd_ >= 0) ::close(fd_);
}

DbFileInfo check_db_file(const std::string& path) {
  DbFileInfo info;
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (!fs::exists(status)) return info;
  KVB_INPUT_CHECK(fs::is_regular_file(status), path, ": not a regular file");
  info.size = static_cast<int64_t>(fs::file_size(path, ec));
  KVB_INPUT_CHECK(!ec, path, ": cannot read: ", ec.message());
  if (info.size == 0) return info;
  info.present = true;
  unsigned char h[100] = {};
  {
    std::ifstream in(path, std::ios::binary);
    KVB_INPUT_CHECK(in, path, ": cannot read");
    in.read(reinterpret_cast<char*>(h), sizeof h);
    KVB_INPUT_CHECK(in.gcount() >= 16 && std::memcmp(h, "SQLite format 3", 16) == 0, path,
                    ": not an SQLite database");
    KVB_INPUT_CHECK(in.gcount() == sizeof h, path, ": damaged SQLite database: ", info.size,
                    " bytes, shorter than its 100-byte header");
  }
  const uint32_t raw_page = (uint32_t{h[16]} << 8) | h[17];
  const int64_t page = raw_page == 1 ? 65536 : raw_page;
  KVB_INPUT_CHECK(page >= 512 && page <= 65536 && (page & (page - 1)) == 0, path,
                  ": damaged SQLite database: page size ", raw_page, " in its header");
  KVB_INPUT_CHECK(h[18] >= 1 && h[18] <= 2 && h[19] >= 1 && h[19] <= 2 && h[21] == 64 &&
                      h[22] == 32 && h[23] == 32,
                  path, ": damaged SQLite database: its header's format bytes are wrong");
  info.wal = h[18] == 2 || h[19] == 2;
  KVB_INPUT_CHECK(info.size % page == 0, path, ": damaged SQLite database: ", info.size,
                  " bytes is not a whole number of ", page,
                  "-byte pages (the file was cut short or appended to)");
  // The page count in the header is valid when the change counter matches the version-valid-for
  // number. Without a -wal (one not checkpointed yet legitimately leaves the file shorter), it is
  // the file's size exactly.
  const uint32_t pages = be32(h + 28);
  if (pages > 0 && be32(h + 24) == be32(h + 92) && !fs::exists(path + "-wal", ec))
    KVB_INPUT_CHECK(static_cast<int64_t>(pages) * page == info.size, path,
                    ": damaged SQLite database: its header records ", pages, " pages of ", page,
                    " bytes, the file holds ", info.size, " bytes (cut short or appended to)");
  return info;
}

sqlite3* open_db_readonly(const std::string& path, const DbFileInfo& info, const DbLock* lock,
                          std::optional<DbLock>* shared) {
  std::error_code ec;
  bool immutable = false;
  if (info.wal && !fs::exists(path + "-wal", ec)) {
    if (lock) {
      immutable = true;
    } else {
      // A writer at work has its -wal beside the file; one holding the lock without it is about
      // to switch the file's mode, which takes a moment: wait for either (or for the lock).
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
      for (;;) {
        if (auto s = DbLock::try_shared(path)) {
          const DbFileInfo now = check_db_file(path);
          if (now.wal && !fs::exists(path + "-wal", ec)) {
            immutable = true;
            if (shared) *shared = std::move(s);
          }
          break;
        }
        const DbFileInfo now = check_db_file(path);
        if (!now.wal || fs::exists(path + "-wal", ec) ||
            std::chrono::steady_clock::now() > deadline)
          break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(sqlite_uri(path, immutable ? "mode=ro&immutable=1" : "mode=ro").c_str(), &db,
                      SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr);
  if (rc != SQLITE_OK) {
    const std::string m = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    throw InputError(path + ": cannot open: " + m);
  }
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  return db;
}

std::string sqlite_problem(sqlite3* db, const std::string& path) {
  const int ext = sqlite3_extended_errcode(db);
  const int code = ext & 0xff;
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
    return path + ": database is locked by another process (waited " +
           std::to_string(kBusyTimeoutMs / 1000) + " s); try again";
  if (ext == SQLITE_READONLY_ROLLBACK)
    return path + ": a write to it was interrupted (" + path +
           "-journal holds it); a kvbench command that writes the database (run, merge, "
           "import-bench) rolls it back";
  if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB)
    return path + ": damaged SQLite database: " + one_line(sqlite3_errmsg(db), 200);
  return path + ": " + one_line(sqlite3_errmsg(db), 200);
}

}  // namespace kvb
