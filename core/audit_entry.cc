#include "core/audit_entry.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/crypto.h"

namespace casebridge::audit {
namespace {

void PutU32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((v >> shift) & 0xFF));
  }
}

void PutU64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((v >> shift) & 0xFF));
  }
}

void PutString(std::string& out, absl::string_view s) {
  if (s.size() > kMaxStringBytes) {
    // Cut on a character boundary: never leave half a UTF-8 sequence.
    size_t cut = kMaxStringBytes;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80)
      --cut;
    s = s.substr(0, cut);
  }
  PutU32(out, static_cast<uint32_t>(s.size()));
  out.append(s.data(), s.size());
}

class Reader {
 public:
  explicit Reader(absl::string_view data) : data_(data) {}

  bool U8(uint8_t& v) {
    if (!Need(1)) return false;
    v = static_cast<uint8_t>(data_[pos_++]);
    return true;
  }
  bool U32(uint32_t& v) {
    if (!Need(4)) return false;
    v = 0;
    for (int i = 0; i < 4; ++i)
      v = (v << 8) | static_cast<uint8_t>(data_[pos_++]);
    return true;
  }
  bool U64(uint64_t& v) {
    if (!Need(8)) return false;
    v = 0;
    for (int i = 0; i < 8; ++i)
      v = (v << 8) | static_cast<uint8_t>(data_[pos_++]);
    return true;
  }
  bool String(std::string& s) {
    uint32_t len = 0;
    if (!U32(len)) return false;
    if (len > kMaxStringBytes) {
      error_ = absl::StrCat("string of ", len, " bytes at offset ", pos_ - 4);
      return false;
    }
    if (!Need(len)) return false;
    s.assign(data_.data() + pos_, len);
    pos_ += len;
    return true;
  }
  bool AtEnd() const { return pos_ == data_.size(); }
  size_t pos() const { return pos_; }
  const std::string& error() const { return error_; }

 private:
  bool Need(size_t n) {
    if (data_.size() - pos_ < n) {
      error_ = absl::StrCat("entry ends at offset ", data_.size(), ", needed ",
                            n, " bytes at offset ", pos_);
      return false;
    }
    return true;
  }
  absl::string_view data_;
  size_t pos_ = 0;
  std::string error_;
};

}  // namespace

std::string Encode(const Entry& entry) {
  std::string out;
  out.reserve(128 + entry.actor.size() + entry.action.size() +
              entry.status_message.size());
  out.push_back(static_cast<char>(kEntryVersion));
  PutU64(out, entry.index);
  PutU64(out, static_cast<uint64_t>(absl::ToUnixMicros(entry.time)));
  PutU32(out, static_cast<uint32_t>(entry.status_code));
  PutString(out, entry.actor);
  PutString(out, entry.action);
  const size_t subjects = std::min(entry.subjects.size(), kMaxSubjects);
  PutU32(out, static_cast<uint32_t>(subjects));
  for (size_t i = 0; i < subjects; ++i) PutString(out, entry.subjects[i]);
  PutString(out, entry.payload_hash);
  PutString(out, entry.status_message);
  return out;
}

absl::StatusOr<Entry> Decode(absl::string_view bytes) {
  Reader r(bytes);
  Entry e;
  auto fail = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(
        "malformed audit entry: ", what,
        r.error().empty() ? "" : absl::StrCat(" (", r.error(), ")")));
  };
  uint8_t version = 0;
  if (!r.U8(version)) return fail("no version byte");
  if (version != kEntryVersion) {
    return fail(absl::StrCat("unknown version ", version));
  }
  uint64_t time_us = 0;
  uint32_t code = 0;
  if (!r.U64(e.index) || !r.U64(time_us) || !r.U32(code)) {
    return fail("truncated header");
  }
  e.time = absl::FromUnixMicros(static_cast<int64_t>(time_us));
  e.status_code = static_cast<int32_t>(code);
  if (!r.String(e.actor) || !r.String(e.action))
    return fail("bad actor/action");
  uint32_t n = 0;
  if (!r.U32(n)) return fail("truncated subject count");
  if (n > kMaxSubjects) return fail(absl::StrCat(n, " subjects"));
  e.subjects.resize(n);
  for (auto& s : e.subjects) {
    if (!r.String(s)) return fail("bad subject");
  }
  if (!r.String(e.payload_hash) || !r.String(e.status_message)) {
    return fail("bad payload hash/status message");
  }
  if (!r.AtEnd()) {
    return fail(absl::StrCat("trailing bytes after offset ", r.pos()));
  }
  return e;
}

std::string PayloadHash(absl::string_view salt, absl::string_view payload) {
  crypto::Sha256Hasher hasher;
  hasher.Update(salt);
  hasher.Update(payload);
  return hasher.Finish();
}

std::string LogOrigin(absl::string_view country) {
  return absl::StrCat(absl::AsciiStrToLower(country), ".casebridge/audit");
}

std::string WitnessName(absl::string_view country) {
  return absl::StrCat(absl::AsciiStrToLower(country), ".casebridge/witness");
}

}  // namespace casebridge::audit
