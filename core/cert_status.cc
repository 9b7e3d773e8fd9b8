#include "core/cert_status.h"

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/crypto.h"
#include "core/openssl_ptr.h"

namespace casebridge::certs {
namespace {

using openssl::BioPtr;
using openssl::MemBio;
using openssl::X509CrlPtr;
using openssl::X509Ptr;

namespace fs = std::filesystem;

struct BnDeleter {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
struct OpensslStringDeleter {
  void operator()(char* s) const { OPENSSL_free(s); }
};

absl::Time Asn1ToTime(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromTM(tm, absl::UTCTimeZone());
}

std::string NameDer(const X509_NAME* name) {
  unsigned char* der = nullptr;
  const int len = i2d_X509_NAME(name, &der);
  if (len <= 0) return "";
  std::string out(reinterpret_cast<const char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

std::string SerialHex(const ASN1_INTEGER* serial) {
  std::unique_ptr<BIGNUM, BnDeleter> bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (bn == nullptr) return "";
  std::unique_ptr<char, OpensslStringDeleter> hex(BN_bn2hex(bn.get()));
  return hex == nullptr ? "" : std::string(hex.get());
}

std::vector<X509Ptr> ParsePemCertificates(absl::string_view pem) {
  BioPtr bio = MemBio(pem);
  std::vector<X509Ptr> certs;
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    certs.push_back(std::move(cert));
  }
  ERR_clear_error();  // the loop ends on "no start line"
  return certs;
}

Item InvalidFile(ItemKind kind, const std::string& key, const std::string& file,
                 std::string detail) {
  Item item;
  item.kind = kind;
  item.key = key;
  item.file = file;
  item.problem = Problem::kInvalid;
  item.detail = std::move(detail);
  return item;
}

// Items for each certificate of `file`; the certificates themselves go to
// `keep` when it is given (CAs, for checking CRLs).
void ReadCertificateFile(const std::string& key, const std::string& file,
                         std::vector<Item>* items, std::vector<X509Ptr>* keep) {
  auto pem = crypto::ReadFile(file);
  if (!pem.ok()) {
    items->push_back(InvalidFile(ItemKind::kCertificate, key, file,
                                 std::string(pem.status().message())));
    return;
  }
  std::vector<X509Ptr> certs = ParsePemCertificates(*pem);
  if (certs.empty()) {
    items->push_back(InvalidFile(ItemKind::kCertificate, key, file,
                                 "no PEM certificate in file"));
    return;
  }
  for (X509Ptr& cert : certs) {
    Item item;
    item.kind = ItemKind::kCertificate;
    item.key = key;
    item.file = file;
    item.subject = NameText(X509_get_subject_name(cert.get()));
    item.issuer = NameText(X509_get_issuer_name(cert.get()));
    item.valid_from = Asn1ToTime(X509_get0_notBefore(cert.get()));
    item.valid_until = Asn1ToTime(X509_get0_notAfter(cert.get()));
    items->push_back(std::move(item));
    if (keep != nullptr) keep->push_back(std::move(cert));
  }
}

// "<8 hex digits>.r<digits>": the hash, or "" for any other name.
std::string CrlHashOf(const std::string& name) {
  const size_t dot = name.find(".r");
  if (dot != 8 || name.size() <= 10) return "";
  for (size_t i = 0; i < 8; ++i) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(name[i]))) return "";
  }
  for (size_t i = 10; i < name.size(); ++i) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(name[i]))) return "";
  }
  return absl::AsciiStrToLower(name.substr(0, 8));
}

// Of `files`, the names OpenSSL's hashed-directory lookup, which the TLS
// stack uses, reads for `stem` ("<hash>.r"): <stem>0, <stem>1, ... up to the
// first missing number (the set's size).
std::set<std::string> ReadByTls(const std::vector<std::string>& files,
                                const std::string& stem) {
  std::set<std::string> names;
  for (const std::string& path : files) {
    names.insert(fs::path(path).filename().string());
  }
  std::set<std::string> read;
  for (std::string next = absl::StrCat(stem, 0); names.contains(next);
       next = absl::StrCat(stem, read.size())) {
    read.insert(next);
  }
  return read;
}

// The CRL items of one trusted CA from the files named for its hash.
void ReadCrlsOf(X509* ca, const std::string& ca_file,
                const std::vector<std::string>& files, const std::string& stem,
                const std::string& crl_dir, Inventory* inventory) {
  const std::string subject = NameText(X509_get_subject_name(ca));
  const std::string ca_der = NameDer(X509_get_subject_name(ca));
  inventory->revoked.AddCa(ca_der);
  const std::set<std::string> read = ReadByTls(files, stem);
  Item newest;
  bool found = false;
  for (const std::string& path : files) {
    const bool read_by_tls = read.contains(fs::path(path).filename().string());
    auto data = crypto::ReadFile(path);
    if (!data.ok()) {
      inventory->items.push_back(
          InvalidFile(ItemKind::kCrl, "tls.crl_dir", path,
                      std::string(data.status().message())));
      inventory->crls_clean = false;
      continue;
    }
    std::string problem;
    X509CrlPtr crl = ReadCrlFile(*data, &problem);
    if (crl == nullptr) {
      inventory->items.push_back(
          InvalidFile(ItemKind::kCrl, "tls.crl_dir", path, std::move(problem)));
      inventory->crls_clean = false;
      continue;
    }
    if (X509_NAME_cmp(X509_CRL_get_issuer(crl.get()),
                      X509_get_subject_name(ca)) != 0) {
      // Another CA with the same subject hash; its own pass judges it.
      continue;
    }
    if (X509_CRL_verify(crl.get(), X509_get0_pubkey(ca)) != 1) {
      ERR_clear_error();
      inventory->items.push_back(
          InvalidFile(ItemKind::kCrl, "tls.crl_dir", path,
                      absl::StrCat("CRL is not signed by CA ", subject,
                                   " from ", ca_file)));
      inventory->crls_clean = false;
      continue;
    }
    const STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
    const int count = revoked == nullptr ? 0 : sk_X509_REVOKED_num(revoked);
    for (int i = 0; i < count; ++i) {
      const X509_REVOKED* entry = sk_X509_REVOKED_value(revoked, i);
      inventory->revoked.Add(ca_der,
                             SerialHex(X509_REVOKED_get0_serialNumber(entry)));
    }
    if (!read_by_tls) {
      // Its entries are enforced by the gateway's own check all the same;
      // its nextUpdate keeps no handshake going.
      Item unread = InvalidFile(
          ItemKind::kCrl, "tls.crl_dir", path,
          absl::StrCat("the TLS stack reads ", stem, "0, ", stem,
                       "1, ... up to the first missing number (", stem,
                       read.size(),
                       ") and never this file, so its nextUpdate keeps no "
                       "handshake going; install it as ",
                       stem, read.size()));
      unread.subject = subject;
      unread.issuer = subject;
      inventory->items.push_back(std::move(unread));
      inventory->crls_clean = false;
      continue;
    }
    const absl::Time next = Asn1ToTime(X509_CRL_get0_nextUpdate(crl.get()));
    if (!found || next > newest.valid_until) {
      found = true;
      newest.kind = ItemKind::kCrl;
      newest.key = "tls.crl_dir";
      newest.file = path;
      newest.subject = subject;
      newest.issuer = subject;
      newest.valid_from = Asn1ToTime(X509_CRL_get0_lastUpdate(crl.get()));
      newest.valid_until = next;
      newest.revoked = static_cast<size_t>(count);
    }
  }
  if (found) {
    inventory->items.push_back(std::move(newest));
    return;
  }
  Item missing;
  missing.kind = ItemKind::kCrl;
  missing.key = "tls.crl_dir";
  missing.file = (fs::path(crl_dir) / absl::StrCat(stem, "0")).string();
  missing.subject = subject;
  missing.issuer = subject;
  missing.problem = Problem::kMissing;
  missing.detail =
      absl::StrCat("no CRL for trusted CA ", subject, " from ", ca_file,
                   "; without it revoked certificates of that CA are accepted");
  inventory->items.push_back(std::move(missing));
}

}  // namespace

X509CrlPtr ReadCrlFile(absl::string_view data, std::string* problem) {
  BioPtr bio = MemBio(data);
  X509CrlPtr crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (crl != nullptr) return crl;
  const auto* der = reinterpret_cast<const unsigned char*>(data.data());
  const X509CrlPtr as_der(
      d2i_X509_CRL(nullptr, &der, static_cast<long>(data.size())));
  ERR_clear_error();
  *problem = as_der != nullptr
                 ? "a CRL in DER: the TLS stack reads PEM only and would skip "
                   "it as if the CA had no CRL (convert it: openssl crl "
                   "-inform DER -outform PEM)"
                 : "not a CRL";
  return nullptr;
}

absl::StatusOr<CertificateId> CertificateIdFromPem(
    absl::string_view pem, const std::vector<std::string>& ca_subjects) {
  BioPtr bio = MemBio(pem);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM certificate");
  }
  CertificateId id;
  const X509_NAME* issuer = X509_get_issuer_name(cert.get());
  id.issuer = NameDer(issuer);
  for (const std::string& der : ca_subjects) {
    if (der == id.issuer) break;
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    std::unique_ptr<X509_NAME, decltype(&X509_NAME_free)> ca(
        d2i_X509_NAME(nullptr, &p, static_cast<long>(der.size())),  // NOLINT
        &X509_NAME_free);
    if (ca != nullptr && X509_NAME_cmp(issuer, ca.get()) == 0) {
      id.issuer = der;
      break;
    }
  }
  ERR_clear_error();
  id.serial = SerialHex(X509_get0_serialNumber(cert.get()));
  return id;
}

void RevocationList::Add(std::string issuer_der, std::string serial) {
  entries_.emplace(std::move(issuer_der), std::move(serial));
}

void RevocationList::AddCa(std::string subject_der) {
  if (std::find(cas_.begin(), cas_.end(), subject_der) == cas_.end()) {
    cas_.push_back(std::move(subject_der));
  }
}

void RevocationList::Merge(const RevocationList& other) {
  entries_.insert(other.entries_.begin(), other.entries_.end());
  for (const std::string& ca : other.cas_) AddCa(ca);
}

bool RevocationList::IsRevoked(const CertificateId& id) const {
  return entries_.contains({id.issuer, id.serial});
}

std::string SameTrustAnchor(X509* a, X509* b) {
  if (X509_NAME_cmp(X509_get_subject_name(a), X509_get_subject_name(b)) == 0) {
    return "the same name";
  }
  const bool same_key =
      EVP_PKEY_eq(X509_get0_pubkey(a), X509_get0_pubkey(b)) == 1;
  ERR_clear_error();
  return same_key ? "the same key" : "";
}

Files FilesOf(const config::Gateway& config) {
  return Files{config.tls_cert, config.own_ca, config.peer_ca, config.crl_dir};
}

Inventory ReadInventory(const Files& files) {
  Inventory inventory;
  ReadCertificateFile("tls.cert", files.cert, &inventory.items, nullptr);
  std::vector<X509Ptr> own_cas;
  std::vector<X509Ptr> peer_cas;
  ReadCertificateFile("tls.own_ca", files.own_ca, &inventory.items, &own_cas);
  ReadCertificateFile("tls.peer_ca", files.peer_ca, &inventory.items,
                      &peer_cas);
  // The TLS stack re-reads both files while the gateway runs: one edited to
  // trust the other side's CA is reported (the start refuses it).
  for (const X509Ptr& theirs : peer_cas) {
    for (const X509Ptr& ours : own_cas) {
      const std::string same = SameTrustAnchor(ours.get(), theirs.get());
      if (same.empty()) continue;
      Item item = InvalidFile(
          ItemKind::kCertificate, "tls.peer_ca", files.peer_ca,
          absl::StrCat("CA has ", same, " as CA ",
                       NameText(X509_get_subject_name(ours.get())), " of ",
                       files.own_ca,
                       ": the office port admits certificates the peer's CA "
                       "issues; give each side its own CA"));
      item.subject = NameText(X509_get_subject_name(theirs.get()));
      inventory.items.push_back(std::move(item));
      break;
    }
  }

  // Candidate CRL files by subject hash.
  std::map<std::string, std::vector<std::string>> by_hash;
  std::error_code ec;
  for (const fs::directory_entry& entry :
       fs::directory_iterator(files.crl_dir, ec)) {
    const std::string name = entry.path().filename().string();
    const std::string hash = CrlHashOf(name);
    if (!hash.empty()) by_hash[hash].push_back(entry.path().string());
  }
  for (auto& [hash, paths] : by_hash) {
    // .r0, .r1, ..., .r10 in numeric order, for stable output.
    std::sort(paths.begin(), paths.end(),
              [](const std::string& a, const std::string& b) {
                uint64_t na = 0;
                uint64_t nb = 0;
                (void)absl::SimpleAtoi(a.substr(a.rfind(".r") + 2), &na);
                (void)absl::SimpleAtoi(b.substr(b.rfind(".r") + 2), &nb);
                return na < nb;
              });
  }
  struct TrustedFile {
    const std::string* path;
    const std::vector<X509Ptr>* cas;
  };
  static const std::vector<std::string> kNoFiles;
  std::set<std::string> seen;  // a CA in both files is read once
  for (const TrustedFile& trusted : {TrustedFile{&files.own_ca, &own_cas},
                                     TrustedFile{&files.peer_ca, &peer_cas}}) {
    for (const X509Ptr& ca : *trusted.cas) {
      if (!seen.insert(NameDer(X509_get_subject_name(ca.get()))).second) {
        continue;
      }
      int ok = 0;
      const uint64_t hash = X509_NAME_hash_ex(X509_get_subject_name(ca.get()),
                                              nullptr, nullptr, &ok);
      const std::string stem = absl::StrFormat("%08x.r", hash);
      const auto it = by_hash.find(stem.substr(0, 8));
      ReadCrlsOf(ca.get(), *trusted.path,
                 it == by_hash.end() ? kNoFiles : it->second, stem,
                 files.crl_dir, &inventory);
    }
  }
  return inventory;
}

const char* StateName(State state) {
  switch (state) {
    case State::kOk:
      return "ok";
    case State::kExpiresSoon:
      return "expires soon";
    case State::kExpired:
      return "expired";
    case State::kNotYetValid:
      return "not yet valid";
    case State::kMissing:
      return "missing";
    case State::kInvalid:
      return "invalid";
  }
  return "invalid";
}

State StateOf(const Item& item, absl::Time now, absl::Duration cert_window,
              absl::Duration crl_window) {
  if (item.problem == Problem::kMissing) return State::kMissing;
  if (item.problem == Problem::kInvalid) return State::kInvalid;
  if (now < item.valid_from) return State::kNotYetValid;
  if (item.valid_until <= now) return State::kExpired;
  const absl::Duration window =
      item.kind == ItemKind::kCrl ? crl_window : cert_window;
  if (item.valid_until - now <= window) return State::kExpiresSoon;
  return State::kOk;
}

std::string NameText(const X509_NAME* name) {
  std::string out;
  for (int i = 0; i < X509_NAME_entry_count(name); ++i) {
    const X509_NAME_ENTRY* entry = X509_NAME_get_entry(name, i);
    const int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(entry));
    const char* key = nid == NID_undef ? "?" : OBJ_nid2sn(nid);
    unsigned char* utf8 = nullptr;
    const int length =
        ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(entry));
    absl::StrAppend(&out, "/", key, "=",
                    length < 0 ? std::string("?")
                               : std::string(reinterpret_cast<char*>(utf8),
                                             static_cast<size_t>(length)));
    OPENSSL_free(utf8);
  }
  return out;
}

}  // namespace casebridge::certs
