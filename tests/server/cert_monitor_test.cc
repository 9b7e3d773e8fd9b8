#include "server/cert_monitor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include "absl/synchronization/notification.h"
#include "core/crypto.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_crl.h"
#include "tests/testing/test_pki.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::CopyTestCrls;
using ::casebridge::testing::CrlOptions;
using ::casebridge::testing::FakeClock;
using ::casebridge::testing::InstallFile;
using ::casebridge::testing::IssueCrl;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::Pki;
using ::casebridge::testing::StatusIs;
using ::casebridge::testing::SubjectHash;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kFiaId[] = "spiffe://pk.casebridge/office/fia-liaison-desk";

std::string Pem(const std::string& stem) {
  auto pem = crypto::ReadFile(Pki(stem + ".crt"));
  EXPECT_OK(pem);
  return pem.ok() ? *pem : "";
}

class CertMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    crl_dir_ = NewTempDir("crl");
    CopyTestCrls(crl_dir_);
    pk_hash_ = SubjectHash(Pki("pk/ca.crt"));
  }

  std::unique_ptr<CertMonitor> Monitor(
      absl::Duration crl_window = absl::Hours(24)) {
    CertMonitor::Options options;
    options.files = certs::Files{Pki("pk/gateway-chain.crt"), Pki("pk/ca.crt"),
                                 Pki("cn/ca.crt"), crl_dir_};
    options.crl_window = crl_window;
    auto monitor =
        std::make_unique<CertMonitor>(options, &revocations_, &clock_);
    monitor->set_on_health(
        [this](bool serving) { health_.push_back(serving); });
    monitor->set_on_revocations([this] { ++revocation_changes_; });
    return monitor;
  }

  // A PK CRL revoking `stems` (certificate files without .crt).
  std::string PkCrl(const std::vector<std::string>& stems,
                    absl::Time next_update) {
    CrlOptions options;
    options.ca_cert = Pki("pk/ca.crt");
    options.ca_key = Pki("pk/ca.key");
    for (const std::string& stem : stems) {
      options.revoked.push_back(Pki(stem + ".crt"));
    }
    // Issued a minute before the monitor's clock: a CRL dated even a second
    // after it would not yet be valid.
    options.last_update = clock_.Now() - absl::Minutes(1);
    options.next_update = next_update;
    auto crl = IssueCrl(options);
    EXPECT_OK(crl);
    return crl.ok() ? *crl : "";
  }

  FakeClock clock_{absl::Now()};
  Revocations revocations_;
  std::string crl_dir_;
  std::string pk_hash_;
  std::vector<bool> health_;
  int revocation_changes_ = 0;
};

TEST_F(CertMonitorTest, FirstCheckLoadsRevocationsAndReportsServing) {
  auto monitor = Monitor();
  monitor->Check();
  EXPECT_THAT(health_, ElementsAre(true));
  EXPECT_TRUE(monitor->serving());
  EXPECT_EQ(revocations_.size(), 1u);
  EXPECT_THAT(
      revocations_.Check(Pem("bad/revoked"), kFiaId),
      StatusIs(absl::StatusCode::kUnauthenticated,
               HasSubstr("of " + std::string(kFiaId) + " was revoked")));
  EXPECT_OK(revocations_.Check(Pem("pk/offices/fia-liaison-desk"), kFiaId));
  EXPECT_EQ(revocation_changes_, 0);  // the first load is no change
}

TEST_F(CertMonitorTest, NewCrlFileRevokesOnTheNextCheck) {
  auto monitor = Monitor();
  monitor->Check();
  InstallFile(crl_dir_, pk_hash_ + ".r1",
              PkCrl({"bad/revoked", "pk/offices/fia-liaison-desk"},
                    absl::Now() + absl::Hours(24 * 30)));
  monitor->Check();
  EXPECT_EQ(revocation_changes_, 1);
  EXPECT_THAT(
      revocations_.Check(Pem("pk/offices/fia-liaison-desk"), kFiaId),
      StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("was revoked")));
  EXPECT_OK(revocations_.Check(Pem("pk/offices/embassy-beijing"), kFiaId));
  // Unchanged files: nothing reloaded, nothing reported.
  monitor->Check();
  EXPECT_EQ(revocation_changes_, 1);
}

TEST_F(CertMonitorTest, CrlReplacedInPlaceIsSeenToo) {
  auto monitor = Monitor();
  monitor->Check();
  InstallFile(crl_dir_, pk_hash_ + ".r0",
              PkCrl({"pk/offices/fia-liaison-desk"},
                    absl::Now() + absl::Hours(24 * 30)));
  monitor->Check();
  EXPECT_TRUE(revocations_.IsRevoked(Pem("pk/offices/fia-liaison-desk")));
}

TEST_F(CertMonitorTest, BrokenCrlFileNeverTakesBackARevocation) {
  auto monitor = Monitor();
  monitor->Check();
  ASSERT_TRUE(revocations_.IsRevoked(Pem("bad/revoked")));
  // The only PK CRL replaced by garbage (a copy gone wrong).
  InstallFile(crl_dir_, pk_hash_ + ".r0", "not a CRL");
  monitor->Check();
  EXPECT_TRUE(revocations_.IsRevoked(Pem("bad/revoked")));
  // And the PK CA has no usable CRL now: health goes NOT_SERVING.
  EXPECT_THAT(health_, ElementsAre(true, false));
}

TEST_F(CertMonitorTest, DeletedCrlOrUnreadableCaNeverTakesBackARevocation) {
  auto monitor = Monitor();
  monitor->Check();
  ASSERT_TRUE(revocations_.IsRevoked(Pem("bad/revoked")));
  // The CRL deleted: no file fails to verify, there is simply none.
  std::filesystem::remove(crl_dir_ + "/" + pk_hash_ + ".r0");
  monitor->Check();
  EXPECT_TRUE(revocations_.IsRevoked(Pem("bad/revoked")));
  EXPECT_FALSE(monitor->serving());
  // A new CRL that no longer lists it does not take it back either. As
  // .r1 it is past a gap the TLS stack's lookup stops at (health stays
  // NOT_SERVING); as .r0, the first unused number, it is read.
  InstallFile(crl_dir_, pk_hash_ + ".r1",
              PkCrl({}, absl::Now() + absl::Hours(24 * 30)));
  monitor->Check();
  EXPECT_TRUE(revocations_.IsRevoked(Pem("bad/revoked")));
  EXPECT_FALSE(monitor->serving());
  std::filesystem::rename(crl_dir_ + "/" + pk_hash_ + ".r1",
                          crl_dir_ + "/" + pk_hash_ + ".r0");
  monitor->Check();
  EXPECT_TRUE(revocations_.IsRevoked(Pem("bad/revoked")));
  EXPECT_TRUE(monitor->serving());
}

TEST_F(CertMonitorTest, CrlPastNextUpdateTurnsHealthNotServingAndBack) {
  // The PK CA's only CRL ends in two hours (the test PKI's own lasts longer).
  InstallFile(crl_dir_, pk_hash_ + ".r0",
              PkCrl({"bad/revoked"}, absl::Now() + absl::Hours(2)));
  auto monitor = Monitor();
  monitor->Check();
  EXPECT_THAT(health_, ElementsAre(true));  // expiring soon is a warning
  clock_.Advance(absl::Hours(3));
  monitor->Check();
  EXPECT_THAT(health_, ElementsAre(true, false));
  EXPECT_FALSE(monitor->serving());
  // A new one past a gap in the numbering is never read by the TLS stack:
  // the handshakes still fail, and health says so.
  const std::string next =
      PkCrl({"bad/revoked"}, clock_.Now() + absl::Hours(24 * 30));
  InstallFile(crl_dir_, pk_hash_ + ".r2", next);
  monitor->Check();
  EXPECT_THAT(health_, ElementsAre(true, false));
  // Under the next unused number: both CRLs count, the newest nextUpdate
  // decides.
  std::filesystem::rename(crl_dir_ + "/" + pk_hash_ + ".r2",
                          crl_dir_ + "/" + pk_hash_ + ".r1");
  monitor->Check();
  EXPECT_THAT(health_, ElementsAre(true, false, true));
}

TEST_F(CertMonitorTest, StartedMonitorPicksUpChangesByItself) {
  CertMonitor::Options options;
  options.files = certs::Files{Pki("pk/gateway-chain.crt"), Pki("pk/ca.crt"),
                               Pki("cn/ca.crt"), crl_dir_};
  options.interval = absl::Milliseconds(20);
  CertMonitor monitor(options, &revocations_, &RealClock::Get());
  absl::Notification reloaded;
  monitor.set_on_revocations([&reloaded] {
    if (!reloaded.HasBeenNotified()) reloaded.Notify();
  });
  monitor.Check();
  monitor.Start();
  InstallFile(crl_dir_, pk_hash_ + ".r1",
              PkCrl({"pk/offices/fia-liaison-desk"},
                    absl::Now() + absl::Hours(24 * 30)));
  EXPECT_TRUE(reloaded.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(revocations_.IsRevoked(Pem("pk/offices/fia-liaison-desk")));
  monitor.Stop();
}

}  // namespace
}  // namespace casebridge::server
