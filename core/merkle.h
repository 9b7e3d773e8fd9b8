// RFC 6962 / RFC 9162 Merkle tree hashing and proofs over SHA-256:
//   leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right).
//
// Trees are never rebuilt to answer a question: proofs and roots are computed
// from the hashes of complete subtrees ("nodes"), which the log stores as it
// grows (see CompactRange). Node (level, index) is the hash of the 2^level
// leaves starting at leaf index * 2^level.
//
// Size-0 rule (docs/audit-log.md#merkle-tree): the empty tree's root is
// SHA-256(""); no inclusion proof exists in it, and a consistency proof from
// size 0 is never asked for or accepted (VerifyConsistency refuses size1 == 0,
// even with size2 == 0, as the RFC 6962 probes do). A witness that has
// cosigned nothing yet takes a checkpoint without a proof instead.
#ifndef CASEBRIDGE_CORE_MERKLE_H_
#define CASEBRIDGE_CORE_MERKLE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace casebridge::merkle {

inline constexpr size_t kHashSize = 32;

std::string LeafHash(absl::string_view entry);
std::string NodeHash(absl::string_view left, absl::string_view right);
// Root of the empty tree: SHA-256 of nothing.
std::string EmptyRoot();

// Where proofs and roots get stored node hashes from.
class NodeSource {
 public:
  virtual ~NodeSource() = default;
  // The hash of complete subtree (level, index). Only nodes wholly inside the
  // tree being asked about are requested.
  virtual absl::StatusOr<std::string> Node(int level, uint64_t index) = 0;
};

// Root of the tree of the first `size` leaves. O(log size) node reads.
absl::StatusOr<std::string> RootAt(uint64_t size, NodeSource& nodes);

// RFC 6962 audit path of leaf `index` in the tree of `size` leaves, leaf to
// root. INVALID_ARGUMENT unless index < size. O(log size) node reads.
absl::StatusOr<std::vector<std::string>> InclusionProof(uint64_t index,
                                                        uint64_t size,
                                                        NodeSource& nodes);

// RFC 6962 consistency proof from the tree of `size1` leaves to that of
// `size2`. INVALID_ARGUMENT unless 0 < size1 <= size2. Empty when the sizes
// are equal. O(log size2) node reads.
absl::StatusOr<std::vector<std::string>> ConsistencyProof(uint64_t size1,
                                                          uint64_t size2,
                                                          NodeSource& nodes);

// Checks an inclusion proof (RFC 9162 §2.1.3.2). OK, or INVALID_ARGUMENT
// saying what is wrong (index out of range, wrong length, root mismatch).
absl::Status VerifyInclusion(uint64_t index, uint64_t size,
                             absl::string_view leaf_hash,
                             const std::vector<std::string>& proof,
                             absl::string_view root);

// Checks a consistency proof (RFC 9162 §2.1.4.2). OK, or INVALID_ARGUMENT
// saying what is wrong.
absl::Status VerifyConsistency(uint64_t size1, uint64_t size2,
                               absl::string_view root1, absl::string_view root2,
                               const std::vector<std::string>& proof);

// The right edge of a growing tree: one hash per set bit of its size (the
// complete subtrees it is made of, largest first). Appending a leaf is
// amortised O(1) hashes; the root is O(log size) hashes.
class CompactRange {
 public:
  // Receives every node a leaf append completes, the leaf itself first
  // (level 0), then each parent up to the largest new complete subtree.
  using NodeSink =
      std::function<void(int level, uint64_t index, absl::string_view hash)>;

  CompactRange() = default;
  // The range of a tree of `size` leaves, from its stored nodes.
  static absl::StatusOr<CompactRange> Load(uint64_t size, NodeSource& nodes);

  void Append(absl::string_view leaf_hash, const NodeSink& sink = nullptr);
  uint64_t size() const { return size_; }
  // EmptyRoot() when empty.
  std::string Root() const;

 private:
  uint64_t size_ = 0;
  std::vector<std::string> hashes_;  // complete subtrees, largest first
};

}  // namespace casebridge::merkle

#endif  // CASEBRIDGE_CORE_MERKLE_H_
