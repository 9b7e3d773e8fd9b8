#include "core/merkle.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/crypto.h"
#include "core/status_macros.h"

namespace casebridge::merkle {
namespace {

static_assert(kHashSize == crypto::kSha256Size);

constexpr char kLeafPrefix[] = {'\x00'};
constexpr char kNodePrefix[] = {'\x01'};

using Digest = std::array<unsigned char, kHashSize>;

absl::string_view View(const Digest& d) {
  return absl::string_view(reinterpret_cast<const char*>(d.data()), d.size());
}

// SHA-256 of the concatenation of `parts`, on this thread's reusable hasher:
// leaf and node hashes are the hot path of log verification.
Digest Sha256Of(std::initializer_list<absl::string_view> parts) {
  thread_local crypto::Sha256Hasher hasher;
  for (absl::string_view part : parts) hasher.Update(part);
  return hasher.FinishDigest();
}

// SHA-256(0x01 || left || right) without heap allocation: the verifiers'
// inner loop.
Digest HashChildren(absl::string_view left, absl::string_view right) {
  return Sha256Of({absl::string_view(kNodePrefix, 1), left, right});
}

std::string ToString(const Digest& d) { return std::string(View(d)); }

// Largest power of two strictly below n (n >= 2): RFC 6962's split point k.
uint64_t SplitPoint(uint64_t n) { return std::bit_floor(n - 1); }

// x >> s for s in [0, 64]; a plain shift by 64 is undefined behaviour, and
// proof-length arithmetic on sizes near 2^64 reaches it.
uint64_t ShiftRight(uint64_t x, int s) { return s >= 64 ? 0 : x >> s; }

absl::StatusOr<std::string> ReadNode(NodeSource& nodes, int level,
                                     uint64_t index) {
  CB_ASSIGN_OR_RETURN(std::string hash, nodes.Node(level, index));
  if (hash.size() != kHashSize) {
    return absl::DataLossError(absl::StrCat("stored Merkle node (", level, ", ",
                                            index, ") has ", hash.size(),
                                            " bytes, expected ", kHashSize));
  }
  return hash;
}

// MTH of leaves [begin, end) where either end - begin is a power of two and
// begin is a multiple of it (one stored node), or end is the tree size and
// begin is a multiple of the smallest power of two >= end - begin, which holds
// for every subtree RFC 6962's recursion visits. The latter is the right-fold
// of the complete subtrees the range decomposes into, largest first; one read
// per set bit of end - begin.
absl::StatusOr<std::string> SubtreeHash(uint64_t begin, uint64_t end,
                                        NodeSource& nodes) {
  if (begin == end) return EmptyRoot();
  if (std::has_single_bit(end - begin)) {
    const int level = std::countr_zero(end - begin);
    return ReadNode(nodes, level, begin >> level);
  }
  std::vector<std::string> parts;
  uint64_t pos = begin;
  for (uint64_t rest = end - begin; rest != 0;) {
    const int level = static_cast<int>(std::bit_width(rest)) - 1;
    CB_ASSIGN_OR_RETURN(std::string node, ReadNode(nodes, level, pos >> level));
    parts.push_back(std::move(node));
    const uint64_t width = uint64_t{1} << level;
    pos += width;
    rest -= width;
  }
  std::string hash = std::move(parts.back());
  for (size_t i = parts.size() - 1; i-- > 0;) {
    hash = ToString(HashChildren(parts[i], hash));
  }
  return hash;
}

// Lengths of the two parts of the inclusion path of `index` in a tree of
// `size` leaves, the path RFC 9162 §2.1.3.2 walks: `inner` hashes below the
// level where the paths to `index` and to `size - 1` meet, then `border`
// left-hand hashes along the tree's right edge. Needs index < size.
struct PathShape {
  int inner;
  int border;
};
PathShape InclusionShape(uint64_t index, uint64_t size) {
  const int inner = static_cast<int>(std::bit_width(index ^ (size - 1)));
  return {inner, std::popcount(ShiftRight(index, inner))};
}

absl::Status CheckHashSize(absl::string_view what, absl::string_view hash) {
  if (hash.size() != kHashSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " has ", hash.size(), " bytes, expected ", kHashSize));
  }
  return absl::OkStatus();
}

absl::Status CheckProofShape(absl::string_view kind,
                             const std::vector<std::string>& proof,
                             size_t expected) {
  if (proof.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        kind, " proof has ", proof.size(), " hashes, expected ", expected));
  }
  for (size_t i = 0; i < proof.size(); ++i) {
    CB_RETURN_IF_ERROR(
        CheckHashSize(absl::StrCat(kind, " proof hash ", i), proof[i]));
  }
  return absl::OkStatus();
}

}  // namespace

std::string LeafHash(absl::string_view entry) {
  return ToString(Sha256Of({absl::string_view(kLeafPrefix, 1), entry}));
}

std::string NodeHash(absl::string_view left, absl::string_view right) {
  return ToString(HashChildren(left, right));
}

std::string EmptyRoot() { return ToString(Sha256Of({})); }

absl::StatusOr<std::string> RootAt(uint64_t size, NodeSource& nodes) {
  if (size == 0) return EmptyRoot();
  return SubtreeHash(0, size, nodes);
}

absl::StatusOr<std::vector<std::string>> InclusionProof(uint64_t index,
                                                        uint64_t size,
                                                        NodeSource& nodes) {
  if (index >= size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "leaf index ", index, " is outside a tree of size ", size));
  }
  // RFC 6962 §2.1.1 PATH, unrolled from the root down; the sibling taken at
  // each step is the last element of that level's recursive answer, so the
  // list is reversed at the end to run leaf to root.
  std::vector<std::string> path;
  uint64_t begin = 0;
  uint64_t end = size;
  while (end - begin > 1) {
    const uint64_t k = SplitPoint(end - begin);
    if (index < begin + k) {
      CB_ASSIGN_OR_RETURN(std::string sibling,
                          SubtreeHash(begin + k, end, nodes));
      path.push_back(std::move(sibling));
      end = begin + k;
    } else {
      CB_ASSIGN_OR_RETURN(std::string sibling,
                          SubtreeHash(begin, begin + k, nodes));
      path.push_back(std::move(sibling));
      begin += k;
    }
  }
  std::reverse(path.begin(), path.end());
  return path;
}

absl::StatusOr<std::vector<std::string>> ConsistencyProof(uint64_t size1,
                                                          uint64_t size2,
                                                          NodeSource& nodes) {
  if (size1 == 0) {
    return absl::InvalidArgumentError(
        "no consistency proof exists from the empty tree");
  }
  if (size1 > size2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "consistency proof from size ", size1, " to the smaller size ", size2));
  }
  // RFC 6962 §2.1.2 SUBPROOF(size1, D[0:size2], true), unrolled like PATH
  // above. `whole` is SUBPROOF's b: the subtree at hand is still the old
  // tree's root, which the verifier already has.
  std::vector<std::string> proof;
  uint64_t begin = 0;
  uint64_t end = size2;
  bool whole = true;
  while (true) {
    const uint64_t n = end - begin;
    const uint64_t m = size1 - begin;
    if (m == n) {
      if (!whole) {
        CB_ASSIGN_OR_RETURN(std::string node, SubtreeHash(begin, end, nodes));
        proof.push_back(std::move(node));
      }
      break;
    }
    const uint64_t k = SplitPoint(n);
    if (m <= k) {
      CB_ASSIGN_OR_RETURN(std::string sibling,
                          SubtreeHash(begin + k, end, nodes));
      proof.push_back(std::move(sibling));
      end = begin + k;
    } else {
      CB_ASSIGN_OR_RETURN(std::string sibling,
                          SubtreeHash(begin, begin + k, nodes));
      proof.push_back(std::move(sibling));
      begin += k;
      whole = false;
    }
  }
  std::reverse(proof.begin(), proof.end());
  return proof;
}

absl::Status VerifyInclusion(uint64_t index, uint64_t size,
                             absl::string_view leaf_hash,
                             const std::vector<std::string>& proof,
                             absl::string_view root) {
  if (index >= size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "leaf index ", index, " is outside a tree of size ", size));
  }
  CB_RETURN_IF_ERROR(CheckHashSize("leaf hash", leaf_hash));
  CB_RETURN_IF_ERROR(CheckHashSize("root", root));
  const PathShape shape = InclusionShape(index, size);
  CB_RETURN_IF_ERROR(CheckProofShape(
      "inclusion", proof, static_cast<size_t>(shape.inner + shape.border)));

  // RFC 9162 §2.1.3.2, step for step. The length check above already implies
  // the algorithm's own sn checks; they stay as the RFC's second line.
  uint64_t fn = index;
  uint64_t sn = size - 1;
  Digest r;
  std::memcpy(r.data(), leaf_hash.data(), kHashSize);
  for (const std::string& p : proof) {
    if (sn == 0) {
      return absl::InvalidArgumentError("inclusion proof is too long");
    }
    if ((fn & 1) != 0 || fn == sn) {
      r = HashChildren(p, View(r));
      if ((fn & 1) == 0) {
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = HashChildren(View(r), p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  if (sn != 0) {
    return absl::InvalidArgumentError("inclusion proof is too short");
  }
  if (View(r) != root) {
    return absl::InvalidArgumentError(
        "root mismatch: the inclusion proof does not lead to the root");
  }
  return absl::OkStatus();
}

absl::Status VerifyConsistency(uint64_t size1, uint64_t size2,
                               absl::string_view root1, absl::string_view root2,
                               const std::vector<std::string>& proof) {
  if (size1 > size2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "consistency from size ", size1, " to the smaller size ", size2));
  }
  if (size1 == 0) {
    // The size-0 rule (see merkle.h): such a proof proves nothing, so a
    // caller asking for one has a bug worth hearing about.
    return absl::InvalidArgumentError(absl::StrCat(
        "consistency from the empty tree to size ", size2,
        " is never proved; a first checkpoint is taken without a proof"));
  }
  if (size1 == size2) {
    // Equal sizes need no hashing: the claim is only that the two roots are
    // the same bytes (RFC 9162 §2.1.4.2 step 1), whatever their length.
    CB_RETURN_IF_ERROR(CheckProofShape("consistency", proof, 0));
    if (root1 != root2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "root mismatch: two different roots for the same size ", size1));
    }
    return absl::OkStatus();
  }
  CB_RETURN_IF_ERROR(CheckHashSize("root1", root1));
  CB_RETURN_IF_ERROR(CheckHashSize("root2", root2));

  // 0 < size1 < size2. The proof is the inclusion path of leaf size1 - 1
  // from level `shift` upwards, preceded by the old tree's largest complete
  // right-edge subtree unless that subtree is the whole old tree (size1 a
  // power of two), in which case root1 stands in for it.
  const int shift = std::countr_zero(size1);
  const bool seed_is_root1 = (size1 >> shift) == 1;
  const PathShape shape = InclusionShape(size1 - 1, size2);
  const size_t expected = static_cast<size_t>(
      (seed_is_root1 ? 0 : 1) + (shape.inner - shift) + shape.border);
  CB_RETURN_IF_ERROR(CheckProofShape("consistency", proof, expected));

  // RFC 9162 §2.1.4.2, with the prepending of root1 (step 2) done by choosing
  // where the seed comes from rather than by copying the proof.
  absl::string_view seed = seed_is_root1 ? root1 : absl::string_view(proof[0]);
  size_t next = seed_is_root1 ? 0 : 1;
  uint64_t fn = size1 - 1;
  uint64_t sn = size2 - 1;
  while ((fn & 1) != 0) {
    fn >>= 1;
    sn >>= 1;
  }
  Digest fr;
  Digest sr;
  std::memcpy(fr.data(), seed.data(), kHashSize);
  sr = fr;
  for (; next < proof.size(); ++next) {
    const std::string& c = proof[next];
    if (sn == 0) {
      return absl::InvalidArgumentError("consistency proof is too long");
    }
    if ((fn & 1) != 0 || fn == sn) {
      fr = HashChildren(c, View(fr));
      sr = HashChildren(c, View(sr));
      if ((fn & 1) == 0) {
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      sr = HashChildren(View(sr), c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  if (sn != 0) {
    return absl::InvalidArgumentError("consistency proof is too short");
  }
  if (View(fr) != root1) {
    return absl::InvalidArgumentError(
        "root mismatch: the consistency proof does not lead to root1");
  }
  if (View(sr) != root2) {
    return absl::InvalidArgumentError(
        "root mismatch: the consistency proof does not lead to root2");
  }
  return absl::OkStatus();
}

absl::StatusOr<CompactRange> CompactRange::Load(uint64_t size,
                                                NodeSource& nodes) {
  CompactRange range;
  uint64_t pos = 0;
  for (int level = 63; level >= 0; --level) {
    const uint64_t width = uint64_t{1} << level;
    if ((size & width) == 0) continue;
    CB_ASSIGN_OR_RETURN(std::string node, ReadNode(nodes, level, pos >> level));
    range.hashes_.push_back(std::move(node));
    pos += width;
  }
  range.size_ = size;
  return range;
}

void CompactRange::Append(absl::string_view leaf_hash, const NodeSink& sink) {
  int level = 0;
  uint64_t index = size_;
  if (sink) sink(level, index, leaf_hash);
  std::string node(leaf_hash);
  // Each trailing one bit of the old size is a complete subtree on the right
  // edge that the new node now completes into its parent.
  while ((index & 1) != 0) {
    node = NodeHash(hashes_.back(), node);
    hashes_.pop_back();
    ++level;
    index >>= 1;
    if (sink) sink(level, index, node);
  }
  hashes_.push_back(std::move(node));
  ++size_;
}

std::string CompactRange::Root() const {
  if (hashes_.empty()) return EmptyRoot();
  std::string root = hashes_.back();
  for (size_t i = hashes_.size() - 1; i-- > 0;) {
    root = NodeHash(hashes_[i], root);
  }
  return root;
}

}  // namespace casebridge::merkle
