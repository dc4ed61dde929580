// core/file_writer.h: the one writer of every output file. OUT that is not a regular file (folder, FIFO,
// socket, device, symlink) is refused by name and left alone; planted names cannot redirect the write;
// a failure or a signal before commit leaves the folder exactly as it was; commit replaces a file.
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file_writer.h"
#include "rwkv_lite.h"

namespace {

using rwkvl::FileWriter;
namespace hooks = rwkvl::file_writer_testing;

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void put(const std::string& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f << bytes;
}

std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

mode_t lmode(const std::string& p) {
  struct stat st {};
  return lstat(p.c_str(), &st) == 0 ? st.st_mode : 0;
}

// Each test gets its own folder (removed afterwards) and the writer's default hooks.
class FileWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/rwkvl-fw.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    hooks::set_use_tmpfile(true);
    hooks::set_temp_names({});
  }
  void TearDown() override {
    hooks::set_use_tmpfile(true);
    hooks::set_temp_names({});
    const std::string cmd = "rm -rf '" + dir_ + "'";
    if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << "cannot remove " << dir_;
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // check_output_path and FileWriter both refuse `p`, with `p` (and `word`) in the message.
  void expect_refused(const std::string& p, const char* word) {
    try {
      rwkvl::check_output_path(p);
      ADD_FAILURE() << "check_output_path accepted " << p;
    } catch (const rwkvl::Error& e) {
      EXPECT_NE(std::string(e.what()).find("'" + p + "'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find(".tmp"), std::string::npos) << e.what();
    }
    for (bool tmpfile : {true, false}) {
      hooks::set_use_tmpfile(tmpfile);
      try {
        FileWriter w(p);
        w.write("x", 1);
        w.commit();
        ADD_FAILURE() << "FileWriter wrote to " << p;
      } catch (const rwkvl::Error& e) {
        EXPECT_EQ(e.code(), rwkvl::ErrorCode::kIo);
        EXPECT_NE(std::string(e.what()).find("'" + p + "'"), std::string::npos) << e.what();
      }
    }
    hooks::set_use_tmpfile(true);
    EXPECT_NE(rwkvl_write_file(p.c_str(), "x", 1), RWKVL_OK);
    EXPECT_NE(std::string(rwkvl_last_error()).find(p), std::string::npos) << rwkvl_last_error();
  }

  std::string dir_;
};

TEST_F(FileWriterTest, WritesNewFileInBothModes) {
  for (bool tmpfile : {true, false}) {
    hooks::set_use_tmpfile(tmpfile);
    const std::string p = path(tmpfile ? "a.bin" : "b.bin");
    {
      FileWriter w(p);
      w.write("abc", 3);
      EXPECT_EQ(w.tell(), 3u);
      w.pad_to(8);
      EXPECT_EQ(w.tell(), 8u);
      std::string big(1 << 20, 'z');  // larger than the buffer: written straight through
      w.write(big.data(), big.size());
      EXPECT_EQ(access(p.c_str(), F_OK), -1) << "the file appeared before commit";
      w.commit();
    }
    const std::string got = slurp(p);
    ASSERT_EQ(got.size(), 8u + (1u << 20));
    EXPECT_EQ(got.substr(0, 3), "abc");
    EXPECT_EQ(got.substr(3, 5), std::string(5, '\0'));
    EXPECT_EQ(got.back(), 'z');
  }
  EXPECT_EQ(listing(dir_), (std::vector<std::string>{"a.bin", "b.bin"}));
  EXPECT_TRUE(hooks::live_temporaries().empty());
}

TEST_F(FileWriterTest, EmptyFileAndRelativePath) {
  char cwd[4096];
  ASSERT_NE(getcwd(cwd, sizeof cwd), nullptr);
  ASSERT_EQ(chdir(dir_.c_str()), 0);
  bool ok = true;
  try {
    rwkvl::write_file_atomic("rel.bin", "", 0);
  } catch (const std::exception& e) {
    ok = false;
    ADD_FAILURE() << e.what();
  }
  ASSERT_EQ(chdir(cwd), 0);
  EXPECT_TRUE(ok);
  EXPECT_EQ(listing(dir_), std::vector<std::string>{"rel.bin"});
  EXPECT_EQ(slurp(path("rel.bin")), "");
}

TEST_F(FileWriterTest, CommitReplacesExistingRegularFile) {
  for (bool tmpfile : {true, false}) {
    hooks::set_use_tmpfile(tmpfile);
    const std::string p = path("out.bin");
    put(p, "old contents");
    {
      FileWriter w(p);
      w.write("new", 3);
      EXPECT_EQ(slurp(p), "old contents") << "replaced before commit";
      w.commit();
    }
    EXPECT_EQ(slurp(p), "new");
    EXPECT_TRUE(S_ISREG(lmode(p)));
    EXPECT_EQ(listing(dir_), std::vector<std::string>{"out.bin"});
  }
}

TEST_F(FileWriterTest, ModeIs0644UnderTheUmask) {
  const mode_t old = umask(027);
  for (bool tmpfile : {true, false}) {
    hooks::set_use_tmpfile(tmpfile);
    const std::string p = path(tmpfile ? "t.bin" : "f.bin");
    rwkvl::write_file_atomic(p, "x", 1);
    EXPECT_EQ(lmode(p) & 0777, 0640u) << p;
  }
  umask(old);
}

TEST_F(FileWriterTest, ExceptionBeforeCommitLeavesFolderUnchanged) {
  put(path("keep.bin"), "precious");
  const std::vector<std::string> before = listing(dir_);
  for (bool tmpfile : {true, false}) {
    hooks::set_use_tmpfile(tmpfile);
    for (const char* name : {"keep.bin", "new.bin"}) {
      try {
        FileWriter w(path(name));
        w.write("partial", 7);
        if (!tmpfile) {
          EXPECT_EQ(hooks::live_temporaries().size(), 1u);
        }
        throw std::runtime_error("interrupted");
      } catch (const std::runtime_error&) {
      }
      EXPECT_EQ(listing(dir_), before) << name << (tmpfile ? " (O_TMPFILE)" : " (named temporary)");
      EXPECT_EQ(slurp(path("keep.bin")), "precious");
      EXPECT_TRUE(hooks::live_temporaries().empty());
    }
  }
}

TEST_F(FileWriterTest, RefusesDirectory) {
  ASSERT_EQ(mkdir(path("out").c_str(), 0755), 0);
  expect_refused(path("out"), "directory");
  EXPECT_TRUE(S_ISDIR(lmode(path("out"))));
  EXPECT_TRUE(listing(path("out")).empty());
  EXPECT_EQ(listing(dir_), std::vector<std::string>{"out"});
  expect_refused(path("out") + "/", "directory");
}

TEST_F(FileWriterTest, RefusesFifoWithoutBlocking) {
  ASSERT_EQ(mkfifo(path("fifo").c_str(), 0644), 0);
  expect_refused(path("fifo"), "FIFO");
  EXPECT_TRUE(S_ISFIFO(lmode(path("fifo"))));
  EXPECT_EQ(listing(dir_), std::vector<std::string>{"fifo"});
}

TEST_F(FileWriterTest, RefusesSocket) {
  const std::string p = path("sock");
  const int s = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  ASSERT_LT(p.size(), sizeof a.sun_path);
  std::strcpy(a.sun_path, p.c_str());
  ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  expect_refused(p, "socket");
  EXPECT_TRUE(S_ISSOCK(lmode(p)));
  close(s);
  EXPECT_EQ(listing(dir_), std::vector<std::string>{"sock"});
}

TEST_F(FileWriterTest, RefusesCharDevice) {
  const std::string p = path("null");
  if (geteuid() != 0 || mknod(p.c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0)
    GTEST_SKIP() << "cannot make a device node here (not root, or no CAP_MKNOD)";
  expect_refused(p, "character device");
  EXPECT_TRUE(S_ISCHR(lmode(p)));
  EXPECT_EQ(listing(dir_), std::vector<std::string>{"null"});
}

TEST_F(FileWriterTest, RefusesDevNullAndDevFull) {
  struct stat st {};
  if (stat("/dev/null", &st) != 0 || stat("/dev/full", &st) != 0) GTEST_SKIP() << "no /dev/null or /dev/full";
  expect_refused("/dev/null", "character device");
  expect_refused("/dev/full", "character device");
  EXPECT_TRUE(S_ISCHR(lmode("/dev/null")));
  EXPECT_TRUE(S_ISCHR(lmode("/dev/full")));
}

TEST_F(FileWriterTest, RefusesSymlinkUnlessAskedToFollow) {
  put(path("target.bin"), "target");
  ASSERT_EQ(symlink("target.bin", path("link").c_str()), 0);
  expect_refused(path("link"), "symbolic link");
  EXPECT_EQ(slurp(path("target.bin")), "target");
  EXPECT_TRUE(S_ISLNK(lmode(path("link"))));
  // A dangling link and a link to a folder are refused too.
  ASSERT_EQ(symlink("missing.bin", path("dangling").c_str()), 0);
  expect_refused(path("dangling"), "symbolic link");
  EXPECT_EQ(access(path("missing.bin").c_str(), F_OK), -1);
  EXPECT_EQ(listing(dir_), (std::vector<std::string>{"dangling", "link", "target.bin"}));

  // follow_symlinks: the target is replaced (atomically, in its own folder), the link is kept.
  rwkvl::WriteOptions follow;
  follow.follow_symlinks = true;
  for (bool tmpfile : {true, false}) {
    hooks::set_use_tmpfile(tmpfile);
    FileWriter w(path("link"), follow);
    w.write(tmpfile ? "via link 1" : "via link 2", 10);
    w.commit();
    EXPECT_EQ(slurp(path("target.bin")), tmpfile ? "via link 1" : "via link 2");
    EXPECT_TRUE(S_ISLNK(lmode(path("link"))));
  }
  EXPECT_THROW(rwkvl::check_output_path(path("dangling"), follow), rwkvl::Error);
  EXPECT_EQ(listing(dir_), (std::vector<std::string>{"dangling", "link", "target.bin"}));
}

TEST_F(FileWriterTest, RefusesMissingOrUnusableFolder) {
  const std::string p = path("no/such/folder/out.bin");
  expect_refused(p, "does not exist");
  put(path("plain"), "x");
  expect_refused(path("plain/out.bin"), "plain");
  EXPECT_EQ(listing(dir_), std::vector<std::string>{"plain"});
  EXPECT_THROW(rwkvl::check_output_path(""), rwkvl::Error);
  EXPECT_EQ(rwkvl_check_output_path(nullptr), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_write_file(nullptr, "x", 1), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_check_output_path(path("fine.bin").c_str()), RWKVL_OK);
  EXPECT_EQ(listing(dir_), std::vector<std::string>{"plain"}) << "the check created something";
}

// The fallback's temporaries: a symlink (or file) planted at every name it may use is never written
// through; it moves on to a free name, or fails naming OUT when none is left.
TEST_F(FileWriterTest, PlantedNamesCannotRedirectTheFallback) {
  hooks::set_use_tmpfile(false);
  put(path("victim1"), "victim one");
  put(path("victim2"), "victim two");
  ASSERT_EQ(symlink(path("victim1").c_str(), path("t1").c_str()), 0);
  ASSERT_EQ(symlink(path("victim2").c_str(), path("t2").c_str()), 0);
  ASSERT_EQ(symlink(path("absent").c_str(), path("t3").c_str()), 0);  // dangling: O_CREAT would create its target
  put(path("t4"), "planted file");
  const std::vector<std::string> planted = listing(dir_);

  // Every candidate is taken: refused, nothing written anywhere.
  hooks::set_temp_names({"t1", "t2", "t3", "t4"});
  try {
    FileWriter w(path("out.bin"));
    ADD_FAILURE() << "wrote through a planted name";
  } catch (const rwkvl::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path("out.bin")), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("'t1'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(listing(dir_), planted);

  // One free candidate after the planted ones: it is used, and renamed to OUT.
  hooks::set_temp_names({"t1", "t2", "t3", "t4", "t5"});
  {
    FileWriter w(path("out.bin"));
    w.write("payload", 7);
    w.commit();
  }
  EXPECT_EQ(slurp(path("out.bin")), "payload");
  EXPECT_EQ(slurp(path("victim1")), "victim one");
  EXPECT_EQ(slurp(path("victim2")), "victim two");
  EXPECT_EQ(slurp(path("t4")), "planted file");
  EXPECT_EQ(access(path("absent").c_str(), F_OK), -1);
  for (const char* l : {"t1", "t2", "t3"}) EXPECT_TRUE(S_ISLNK(lmode(path(l)))) << l;
  std::vector<std::string> want = planted;
  want.push_back("out.bin");
  std::sort(want.begin(), want.end());
  EXPECT_EQ(listing(dir_), want);
}

// O_TMPFILE replacing an existing OUT links the file under a fresh name first: planted names there are
// skipped as well.
TEST_F(FileWriterTest, PlantedNamesCannotRedirectTheReplaceLink) {
  put(path("victim"), "victim");
  put(path("out.bin"), "old");
  ASSERT_EQ(symlink(path("victim").c_str(), path("t1").c_str()), 0);
  hooks::set_temp_names({"t1", "t2"});
  {
    FileWriter w(path("out.bin"));
    w.write("new", 3);
    w.commit();
  }
  EXPECT_EQ(slurp(path("out.bin")), "new");
  EXPECT_EQ(slurp(path("victim")), "victim");
  EXPECT_TRUE(S_ISLNK(lmode(path("t1"))));
  EXPECT_EQ(listing(dir_), (std::vector<std::string>{"out.bin", "t1", "victim"}));

  // All candidates planted: the commit fails naming OUT, and OUT keeps its old contents.
  hooks::set_temp_names({"t1"});
  try {
    FileWriter w(path("out.bin"));
    w.write("newer", 5);
    w.commit();
    ADD_FAILURE() << "commit went through a planted name";
  } catch (const rwkvl::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path("out.bin")), std::string::npos) << e.what();
  }
  EXPECT_EQ(slurp(path("out.bin")), "new");
  EXPECT_EQ(slurp(path("victim")), "victim");
  EXPECT_EQ(listing(dir_), (std::vector<std::string>{"out.bin", "t1", "victim"}));
}

// What was a regular file at the checks but is a folder at commit is not replaced.
TEST_F(FileWriterTest, DestinationChangedBeforeCommit) {
  for (bool tmpfile : {true, false}) {
    hooks::set_use_tmpfile(tmpfile);
    put(path("out.bin"), "old");
    try {
      FileWriter w(path("out.bin"));
      w.write("new", 3);
      ASSERT_EQ(unlink(path("out.bin").c_str()), 0);
      ASSERT_EQ(mkdir(path("out.bin").c_str(), 0755), 0);
      w.commit();
      ADD_FAILURE() << "replaced a folder";
    } catch (const rwkvl::Error& e) {
      EXPECT_NE(std::string(e.what()).find("directory"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(S_ISDIR(lmode(path("out.bin"))));
    EXPECT_EQ(listing(dir_), std::vector<std::string>{"out.bin"});
    ASSERT_EQ(rmdir(path("out.bin").c_str()), 0);
  }
}

// SIGINT / SIGTERM while a named temporary exists: the handler removes it, then the signal kills the
// process as it would have (default action re-raised).
TEST_F(FileWriterTest, SignalRemovesNamedTemporary) {
  for (int sig : {SIGINT, SIGTERM}) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      signal(sig, SIG_DFL);
      hooks::install_signal_handlers();
      hooks::set_use_tmpfile(false);
      FileWriter w(path("out.bin"));
      w.write("partial", 7);
      if (hooks::live_temporaries().size() != 1 || listing(dir_).size() != 1) _exit(3);
      raise(sig);
      _exit(4);  // not reached
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    EXPECT_EQ(WTERMSIG(status), sig);
    EXPECT_TRUE(listing(dir_).empty()) << "left " << (listing(dir_).empty() ? "" : listing(dir_)[0]);
  }
}

// A program's own handler still runs after the clean-up.
TEST_F(FileWriterTest, SignalChainsToProgramHandler) {
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    struct sigaction sa {};
    sa.sa_handler = [](int) { _exit(42); };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    hooks::install_signal_handlers();
    hooks::set_use_tmpfile(false);
    FileWriter w(path("out.bin"));
    w.write("partial", 7);
    raise(SIGTERM);
    _exit(4);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 42);
  EXPECT_TRUE(listing(dir_).empty());
}

// A full disk: a clear error naming OUT, nothing left. Needs a small tmpfs (root with CAP_SYS_ADMIN).
TEST_F(FileWriterTest, FullDiskFailsAndLeavesNothing) {
  const std::string mnt = path("small");
  ASSERT_EQ(mkdir(mnt.c_str(), 0755), 0);
  if (mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=64k") != 0) GTEST_SKIP() << "cannot mount a tmpfs here";
  struct Unmount {
    std::string m;
    ~Unmount() { umount2(m.c_str(), MNT_DETACH); }
  } unmount{mnt};
  put(mnt + "/old.bin", "old");
  const std::string big(1 << 20, 'x');
  for (bool tmpfile : {true, false}) {
    hooks::set_use_tmpfile(tmpfile);
    for (const char* name : {"new.bin", "old.bin"}) {
      const std::string p = mnt + "/" + name;
      try {
        rwkvl::write_file_atomic(p, big.data(), big.size());
        ADD_FAILURE() << "a 1 MiB write to a 64 KiB tmpfs succeeded";
      } catch (const rwkvl::Error& e) {
        EXPECT_NE(std::string(e.what()).find("'" + p + "'"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(std::strerror(ENOSPC)), std::string::npos) << e.what();
      }
      EXPECT_EQ(listing(mnt), std::vector<std::string>{"old.bin"});
      EXPECT_EQ(slurp(mnt + "/old.bin"), "old");
    }
  }
}

}  // namespace
