#include "core/cert_status.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <filesystem>
#include <memory>

#include "core/crypto.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_crl.h"
#include "tests/testing/test_pki.h"

namespace casebridge::certs {
namespace {

using ::casebridge::testing::CopyTestCrls;
using ::casebridge::testing::CrlOptions;
using ::casebridge::testing::CrlToDer;
using ::casebridge::testing::InstallFile;
using ::casebridge::testing::IssueCrl;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::Pki;
using ::casebridge::testing::StatusIs;
using ::casebridge::testing::SubjectHash;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr absl::Duration kDay = absl::Hours(24);

Files PkFiles(const std::string& crl_dir) {
  return Files{Pki("pk/gateway-chain.crt"), Pki("pk/ca.crt"), Pki("cn/ca.crt"),
               crl_dir};
}

CertificateId IdOf(const std::string& pem_file) {
  auto pem = crypto::ReadFile(pem_file);
  EXPECT_OK(pem);
  auto id = CertificateIdFromPem(pem.ok() ? *pem : "");
  EXPECT_OK(id);
  return id.ok() ? *id : CertificateId{};
}

std::vector<Item> CrlItems(const Inventory& inventory) {
  std::vector<Item> out;
  for (const Item& item : inventory.items) {
    if (item.kind == ItemKind::kCrl) out.push_back(item);
  }
  return out;
}

// The CRL files read as invalid now, each with the file and why.
std::vector<Item> InvalidCrls(const Inventory& inventory) {
  std::vector<Item> out;
  for (const Item& item : CrlItems(inventory)) {
    if (StateOf(item, absl::Now(), kDay, kDay) == State::kInvalid) {
      out.push_back(item);
    }
  }
  return out;
}

TEST(CertStatusTest, NamesReadAsWrittenInAnyScript) {
  // A name in Chinese, as the MPS may write its own: UTF-8, not escapes.
  std::unique_ptr<X509_NAME, decltype(&X509_NAME_free)> name(X509_NAME_new(),
                                                             X509_NAME_free);
  ASSERT_EQ(
      X509_NAME_add_entry_by_txt(
          name.get(), "O", MBSTRING_UTF8,
          reinterpret_cast<const unsigned char*>("CaseBridge CN"), -1, -1, 0),
      1);
  ASSERT_EQ(X509_NAME_add_entry_by_txt(
                name.get(), "CN", MBSTRING_UTF8,
                reinterpret_cast<const unsigned char*>("公安部 联络处 网关"),
                -1, -1, 0),
            1);
  EXPECT_EQ(NameText(name.get()), "/O=CaseBridge CN/CN=公安部 联络处 网关");
}

TEST(CertStatusTest, ReadsEveryCertificateAndTheCurrentCrlOfEachCa) {
  const Inventory inventory = ReadInventory(PkFiles(Pki("crl")));
  // Gateway leaf and the CA after it, the PK CA, the CN CA, two CRLs.
  ASSERT_EQ(inventory.items.size(), 6u);
  EXPECT_EQ(inventory.items[0].key, "tls.cert");
  EXPECT_THAT(inventory.items[0].subject, HasSubstr("gateway"));
  EXPECT_EQ(inventory.items[2].key, "tls.own_ca");
  EXPECT_EQ(inventory.items[3].key, "tls.peer_ca");
  EXPECT_TRUE(inventory.crls_clean);
  const absl::Time now = absl::Now();
  for (const Item& item : inventory.items) {
    EXPECT_EQ(StateOf(item, now, 30 * kDay, 7 * kDay), State::kOk)
        << item.file << " " << item.subject;
  }
  const std::vector<Item> crls = CrlItems(inventory);
  ASSERT_EQ(crls.size(), 2u);
  EXPECT_EQ(crls[0].subject, inventory.items[2].subject);  // the PK CA
  EXPECT_EQ(crls[0].revoked, 1u);                          // bad/revoked
}

TEST(CertStatusTest, RevocationListNamesTheRevokedCertificateOnly) {
  const Inventory inventory = ReadInventory(PkFiles(Pki("crl")));
  EXPECT_TRUE(inventory.revoked.IsRevoked(IdOf(Pki("bad/revoked.crt"))));
  EXPECT_FALSE(inventory.revoked.IsRevoked(
      IdOf(Pki("pk/offices/fia-liaison-desk.crt"))));
  // Same serial from another issuer is another certificate.
  CertificateId other = IdOf(Pki("bad/revoked.crt"));
  other.issuer = IdOf(Pki("cn/offices/mps-liaison.crt")).issuer;
  EXPECT_FALSE(inventory.revoked.IsRevoked(other));
}

TEST(CertStatusTest, NewerCrlFileAddsItsRevocations) {
  const std::string dir = NewTempDir("crl");
  CopyTestCrls(dir);
  CrlOptions options;
  options.ca_cert = Pki("pk/ca.crt");
  options.ca_key = Pki("pk/ca.key");
  options.revoked = {Pki("pk/offices/fia-liaison-desk.crt")};
  ASSERT_OK_AND_ASSIGN(const std::string crl, IssueCrl(options));
  InstallFile(dir, SubjectHash(Pki("pk/ca.crt")) + ".r1", crl);
  const Inventory inventory = ReadInventory(PkFiles(dir));
  EXPECT_TRUE(inventory.revoked.IsRevoked(
      IdOf(Pki("pk/offices/fia-liaison-desk.crt"))));
  // Entries of the older file still count.
  EXPECT_TRUE(inventory.revoked.IsRevoked(IdOf(Pki("bad/revoked.crt"))));
  EXPECT_FALSE(
      inventory.revoked.IsRevoked(IdOf(Pki("pk/offices/embassy-beijing.crt"))));
}

TEST(CertStatusTest, ACrlPastAGapInTheNumberingKeepsNoHandshakeGoing) {
  const std::string dir = NewTempDir("crl");
  CopyTestCrls(dir);
  const std::string pk_hash = SubjectHash(Pki("pk/ca.crt"));
  const absl::Time now = absl::Now();
  CrlOptions options;
  options.ca_cert = Pki("pk/ca.crt");
  options.ca_key = Pki("pk/ca.key");
  options.revoked = {Pki("bad/revoked.crt")};
  options.next_update = now + absl::Hours(2);
  ASSERT_OK_AND_ASSIGN(const std::string ending, IssueCrl(options));
  InstallFile(dir, pk_hash + ".r0", ending);
  // The next CRL, installed as .r2 with no .r1: OpenSSL's lookup stops at
  // the missing .r1 and never reads it.
  options.revoked.push_back(Pki("pk/offices/fia-liaison-desk.crt"));
  options.next_update = now + 30 * kDay;
  ASSERT_OK_AND_ASSIGN(const std::string next, IssueCrl(options));
  InstallFile(dir, pk_hash + ".r2", next);

  const Inventory gapped = ReadInventory(PkFiles(dir));
  // Its revocations count for the gateway's own check all the same.
  EXPECT_TRUE(
      gapped.revoked.IsRevoked(IdOf(Pki("pk/offices/fia-liaison-desk.crt"))));
  EXPECT_FALSE(gapped.crls_clean);
  const std::vector<Item> unread = InvalidCrls(gapped);
  ASSERT_EQ(unread.size(), 1u);
  EXPECT_EQ(unread[0].file, dir + "/" + pk_hash + ".r2");
  EXPECT_THAT(unread[0].detail,
              AllOf(HasSubstr("never this file"),
                    HasSubstr("install it as " + pk_hash + ".r1")));
  EXPECT_THAT(unread[0].subject, HasSubstr("CaseBridge PK Dev Root CA"));
  // The PK CA is judged by .r0, which the TLS stack does read: three hours
  // on, its handshakes fail, and so the inventory says.
  bool judged = false;
  for (const Item& item : CrlItems(gapped)) {
    if (item.problem != Problem::kNone ||
        item.file.find(pk_hash) == std::string::npos) {
      continue;
    }
    judged = true;
    EXPECT_EQ(item.file, dir + "/" + pk_hash + ".r0");
    EXPECT_EQ(StateOf(item, now + absl::Hours(3), kDay, kDay), State::kExpired);
  }
  EXPECT_TRUE(judged);

  // Renamed to the number the lookup reaches, it is the CA's current CRL.
  std::filesystem::rename(dir + "/" + pk_hash + ".r2",
                          dir + "/" + pk_hash + ".r1");
  const Inventory mended = ReadInventory(PkFiles(dir));
  EXPECT_TRUE(mended.crls_clean);
  EXPECT_TRUE(InvalidCrls(mended).empty());
  judged = false;
  for (const Item& item : CrlItems(mended)) {
    if (item.file.find(pk_hash) == std::string::npos) continue;
    judged = true;
    EXPECT_EQ(item.file, dir + "/" + pk_hash + ".r1");
    EXPECT_EQ(StateOf(item, now + absl::Hours(3), kDay, kDay), State::kOk);
  }
  EXPECT_TRUE(judged);

  // A number the lookup never forms (a leading zero) is not read either.
  InstallFile(dir, pk_hash + ".r02", next);
  const std::vector<Item> misnamed = InvalidCrls(ReadInventory(PkFiles(dir)));
  ASSERT_EQ(misnamed.size(), 1u);
  EXPECT_EQ(misnamed[0].file, dir + "/" + pk_hash + ".r02");
  EXPECT_THAT(misnamed[0].detail,
              HasSubstr("install it as " + pk_hash + ".r2"));
}

TEST(CertStatusTest, CaWithoutCrlIsMissing) {
  const std::string dir = NewTempDir("crl");
  const Inventory inventory = ReadInventory(PkFiles(dir));
  const std::vector<Item> crls = CrlItems(inventory);
  ASSERT_EQ(crls.size(), 2u);
  for (const Item& item : crls) {
    EXPECT_EQ(StateOf(item, absl::Now(), kDay, kDay), State::kMissing);
    EXPECT_THAT(item.detail, HasSubstr("no CRL for trusted CA"));
    EXPECT_THAT(item.file, HasSubstr(".r0"));
  }
}

TEST(CertStatusTest, CrlSignedByAnotherCaIsInvalid) {
  const std::string dir = NewTempDir("crl");
  CopyTestCrls(dir);
  CrlOptions options;  // signed by the rogue CA, named for the PK CA
  options.ca_cert = Pki("bad/rogue-ca.crt");
  options.ca_key = Pki("bad/rogue-ca.key");
  ASSERT_OK_AND_ASSIGN(const std::string crl, IssueCrl(options));
  InstallFile(dir, SubjectHash(Pki("pk/ca.crt")) + ".r1", crl);
  const Inventory inventory = ReadInventory(PkFiles(dir));
  // The rogue CRL names another issuer: not the PK CA's, so not read as
  // one. The PK CA still has its own.
  EXPECT_TRUE(inventory.crls_clean);
  EXPECT_EQ(CrlItems(inventory).size(), 2u);

  // A file that is not a CRL at all is invalid.
  InstallFile(dir, SubjectHash(Pki("pk/ca.crt")) + ".r2", "garbage");
  const Inventory broken = ReadInventory(PkFiles(dir));
  EXPECT_FALSE(broken.crls_clean);
  const std::vector<Item> invalid = InvalidCrls(broken);
  ASSERT_EQ(invalid.size(), 1u);
  EXPECT_THAT(invalid[0].file, HasSubstr(".r2"));
  EXPECT_EQ(invalid[0].detail, "not a CRL");
  // The good files still count.
  EXPECT_TRUE(broken.revoked.IsRevoked(IdOf(Pki("bad/revoked.crt"))));

  // Nor is a CRL in DER: the TLS stack would not read it.
  ASSERT_OK_AND_ASSIGN(
      const std::string pem,
      crypto::ReadFile(Pki("crl/" + SubjectHash(Pki("pk/ca.crt")) + ".r0")));
  ASSERT_OK_AND_ASSIGN(const std::string der, CrlToDer(pem));
  InstallFile(dir, SubjectHash(Pki("pk/ca.crt")) + ".r2", der);
  const Inventory in_der = ReadInventory(PkFiles(dir));
  EXPECT_FALSE(in_der.crls_clean);
  const std::vector<Item> refused = InvalidCrls(in_der);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_THAT(refused[0].detail, HasSubstr("a CRL in DER"));
}

TEST(CertStatusTest, CrlSignedWithAnotherKeyUnderTheCaNameIsInvalid) {
  const std::string dir = NewTempDir("crl");
  CopyTestCrls(dir);
  // The CN CA's key signing a CRL that names the CN CA goes under the CN
  // hash: fine. Named for the CN CA but signed by the PK CA's key: invalid.
  CrlOptions options;
  options.ca_cert = Pki("cn/ca.crt");
  options.ca_key = Pki("pk/ca.key");
  ASSERT_OK_AND_ASSIGN(const std::string crl, IssueCrl(options));
  InstallFile(dir, SubjectHash(Pki("cn/ca.crt")) + ".r1", crl);
  const Inventory inventory = ReadInventory(PkFiles(dir));
  EXPECT_FALSE(inventory.crls_clean);
  bool invalid = false;
  for (const Item& item : CrlItems(inventory)) {
    if (item.problem == Problem::kInvalid) {
      invalid = true;
      EXPECT_THAT(item.detail, HasSubstr("is not signed by CA"));
    }
  }
  EXPECT_TRUE(invalid);
}

TEST(CertStatusTest, StatesFollowTheDatesAndTheWindows) {
  Item cert;
  cert.kind = ItemKind::kCertificate;
  const absl::Time now = absl::FromUnixSeconds(2000000000);
  cert.valid_from = now - 10 * kDay;
  cert.valid_until = now + 20 * kDay;
  EXPECT_EQ(StateOf(cert, now, 30 * kDay, kDay), State::kExpiresSoon);
  EXPECT_EQ(StateOf(cert, now, 10 * kDay, 30 * kDay), State::kOk);
  EXPECT_EQ(StateOf(cert, now + 20 * kDay, 0 * kDay, 0 * kDay),
            State::kExpired);
  EXPECT_EQ(StateOf(cert, now - 11 * kDay, 0 * kDay, 0 * kDay),
            State::kNotYetValid);
  Item crl = cert;
  crl.kind = ItemKind::kCrl;
  EXPECT_EQ(StateOf(crl, now, 30 * kDay, 7 * kDay), State::kOk);
  EXPECT_EQ(StateOf(crl, now, 7 * kDay, 30 * kDay), State::kExpiresSoon);
  crl.valid_until = absl::InfinitePast();  // no nextUpdate
  EXPECT_EQ(StateOf(crl, now, kDay, kDay), State::kExpired);
  EXPECT_TRUE(IsFailure(State::kExpired));
  EXPECT_TRUE(IsFailure(State::kMissing));
  EXPECT_FALSE(IsFailure(State::kExpiresSoon));
}

TEST(CertStatusTest, ACaTrustedOnBothPortsIsAnInvalidItem) {
  // As if tls.peer_ca had been edited, while the gateway runs, to trust
  // this country's CA: the TLS stack would take it up.
  Files files = PkFiles(Pki("crl"));
  files.peer_ca = files.own_ca;
  const Inventory inventory = ReadInventory(files);
  std::vector<Item> invalid;
  for (const Item& item : inventory.items) {
    if (StateOf(item, absl::Now(), kDay, kDay) == State::kInvalid) {
      invalid.push_back(item);
    }
  }
  ASSERT_EQ(invalid.size(), 1u);
  EXPECT_EQ(invalid[0].key, "tls.peer_ca");
  EXPECT_THAT(invalid[0].subject, HasSubstr("CaseBridge PK Dev Root CA"));
  EXPECT_THAT(invalid[0].detail,
              AllOf(HasSubstr("the same name"), HasSubstr(files.own_ca)));
  // The apart files of the PKI have none.
  for (const Item& item : ReadInventory(PkFiles(Pki("crl"))).items) {
    EXPECT_NE(item.problem, Problem::kInvalid) << item.detail;
  }
}

// A certificate of the PK CA whose issuer field spells the CA's name in
// another string type than the CA's own subject (UTF8String and
// PrintableString swapped): the same name to OpenSSL, other DER bytes.
std::string CertWithReencodedIssuer() {
  auto ca_pem = crypto::ReadFile(Pki("pk/ca.crt"));
  auto key_pem = crypto::ReadFile(Pki("pk/ca.key"));
  EXPECT_OK(ca_pem.status());
  EXPECT_OK(key_pem.status());
  if (!ca_pem.ok() || !key_pem.ok()) return "";
  using X509Owner = std::unique_ptr<X509, decltype(&X509_free)>;
  using KeyOwner = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
  using NameOwner = std::unique_ptr<X509_NAME, decltype(&X509_NAME_free)>;
  using BioOwner = std::unique_ptr<BIO, decltype(&BIO_free)>;
  BioOwner ca_bio(
      BIO_new_mem_buf(ca_pem->data(), static_cast<int>(ca_pem->size())),
      &BIO_free);
  X509Owner ca(PEM_read_bio_X509(ca_bio.get(), nullptr, nullptr, nullptr),
               &X509_free);
  BioOwner key_bio(
      BIO_new_mem_buf(key_pem->data(), static_cast<int>(key_pem->size())),
      &BIO_free);
  KeyOwner ca_key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr),
      &EVP_PKEY_free);
  EXPECT_NE(ca, nullptr);
  EXPECT_NE(ca_key, nullptr);
  if (ca == nullptr || ca_key == nullptr) return "";

  NameOwner issuer(X509_NAME_new(), &X509_NAME_free);
  const X509_NAME* subject = X509_get_subject_name(ca.get());
  for (int i = 0; i < X509_NAME_entry_count(subject); ++i) {
    const X509_NAME_ENTRY* entry = X509_NAME_get_entry(subject, i);
    const ASN1_STRING* value = X509_NAME_ENTRY_get_data(entry);
    const int type = ASN1_STRING_type(value) == V_ASN1_UTF8STRING
                         ? V_ASN1_PRINTABLESTRING
                         : V_ASN1_UTF8STRING;
    EXPECT_EQ(X509_NAME_add_entry_by_OBJ(issuer.get(),
                                         X509_NAME_ENTRY_get_object(entry),
                                         type, ASN1_STRING_get0_data(value),
                                         ASN1_STRING_length(value), -1, 0),
              1);
  }
  KeyOwner leaf_key(EVP_EC_gen("P-256"), &EVP_PKEY_free);
  X509Owner cert(X509_new(), &X509_free);
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 0x5eed);
  X509_set_issuer_name(cert.get(), issuer.get());
  NameOwner name(X509_NAME_new(), &X509_NAME_free);
  X509_NAME_add_entry_by_txt(
      name.get(), "CN", MBSTRING_ASC,
      reinterpret_cast<const unsigned char*>("reencoded"), -1, -1, 0);
  X509_set_subject_name(cert.get(), name.get());
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600 * 24);
  X509_set_pubkey(cert.get(), leaf_key.get());
  EXPECT_GT(X509_sign(cert.get(), ca_key.get(), EVP_sha256()), 0);
  EXPECT_EQ(X509_NAME_cmp(X509_get_issuer_name(cert.get()), subject), 0);
  BioOwner out(BIO_new(BIO_s_mem()), &BIO_free);
  PEM_write_bio_X509(out.get(), cert.get());
  char* data = nullptr;
  const long size = BIO_get_mem_data(out.get(), &data);  // NOLINT
  return std::string(data, static_cast<size_t>(size));
}

TEST(CertStatusTest, ARevokedCertificateIsFoundWhateverTypeSpellsItsIssuer) {
  const std::string dir = NewTempDir("reencoded");
  const std::string pem = CertWithReencodedIssuer();
  ASSERT_FALSE(pem.empty());
  const std::string pem_file = testing::WriteFile(dir + "/reencoded.crt", pem);
  const std::string crl_dir = dir + "/crl";
  CopyTestCrls(crl_dir);
  CrlOptions crl;
  crl.ca_cert = Pki("pk/ca.crt");
  crl.ca_key = Pki("pk/ca.key");
  crl.revoked = {Pki("bad/revoked.crt"), pem_file};
  ASSERT_OK_AND_ASSIGN(const std::string issued, IssueCrl(crl));
  InstallFile(crl_dir, SubjectHash(Pki("pk/ca.crt")) + ".r1", issued);
  const Inventory inventory = ReadInventory(PkFiles(crl_dir));

  ASSERT_OK_AND_ASSIGN(const CertificateId id,
                       CertificateIdFromPem(pem, inventory.revoked.cas()));
  EXPECT_TRUE(inventory.revoked.IsRevoked(id));
  // Its issuer's own bytes are not the CA's: matched by them alone, the
  // revocation would be missed.
  ASSERT_OK_AND_ASSIGN(const CertificateId raw, CertificateIdFromPem(pem));
  EXPECT_NE(raw.issuer, id.issuer);
  EXPECT_FALSE(inventory.revoked.IsRevoked(raw));
  // The PKI's own revoked certificate is found either way.
  auto revoked_pem = crypto::ReadFile(Pki("bad/revoked.crt"));
  ASSERT_OK(revoked_pem.status());
  ASSERT_OK_AND_ASSIGN(
      const CertificateId plain,
      CertificateIdFromPem(*revoked_pem, inventory.revoked.cas()));
  EXPECT_TRUE(inventory.revoked.IsRevoked(plain));
}

TEST(CertStatusTest, UnreadableCertificateFileIsAnInvalidItem) {
  Files files = PkFiles(Pki("crl"));
  files.cert = NewTempDir("none") + "/missing.crt";
  const Inventory inventory = ReadInventory(files);
  ASSERT_FALSE(inventory.items.empty());
  EXPECT_EQ(inventory.items[0].problem, Problem::kInvalid);
  EXPECT_EQ(inventory.items[0].key, "tls.cert");
}

}  // namespace
}  // namespace casebridge::certs
