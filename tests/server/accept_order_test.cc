#include "server/accept_order.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace casebridge::server {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// A checked envelope of `exchange_id` at `priority`, named by its sequence.
Inbound::Checked Item(uint64_t sequence, const std::string& exchange_id,
                      v1::Priority priority) {
  Inbound::Checked checked;
  checked.sequence = sequence;
  checked.envelope.mutable_message()->set_exchange_id(exchange_id);
  checked.envelope.mutable_message()->set_priority(priority);
  return checked;
}

std::vector<uint64_t> Sequences(const std::vector<Inbound::Checked>& items) {
  std::vector<uint64_t> out;
  for (const Inbound::Checked& item : items) out.push_back(item.sequence);
  return out;
}

constexpr v1::Priority kRoutine = v1::PRIORITY_ROUTINE;
constexpr v1::Priority kUrgent = v1::PRIORITY_URGENT;

TEST(AcceptOrderTest, OldestFirstWhenNothingIsUrgent) {
  std::vector<Inbound::Checked> ready = {Item(1, "PK-2026-000001", kRoutine),
                                         Item(2, "PK-2026-000002", kRoutine),
                                         Item(3, "PK-2026-000003", kRoutine)};
  EXPECT_THAT(Sequences(TakeAcceptBatch(ready, 2)), ElementsAre(1, 2));
  EXPECT_THAT(Sequences(ready), ElementsAre(3));
  EXPECT_THAT(Sequences(TakeAcceptBatch(ready, 2)), ElementsAre(3));
  EXPECT_THAT(ready, IsEmpty());
}

TEST(AcceptOrderTest, UrgentEnvelopesGoAloneAndFirst) {
  std::vector<Inbound::Checked> ready = {
      Item(1, "PK-2026-000001", kRoutine), Item(2, "PK-2026-000002", kUrgent),
      Item(3, "PK-2026-000003", kRoutine), Item(4, "PK-2026-000004", kUrgent)};
  EXPECT_THAT(Sequences(TakeAcceptBatch(ready, 32)), ElementsAre(2, 4));
  EXPECT_THAT(Sequences(ready), ElementsAre(1, 3));
  EXPECT_THAT(Sequences(TakeAcceptBatch(ready, 32)), ElementsAre(1, 3));
}

TEST(AcceptOrderTest, UrgentNeverOvertakesItsOwnCase) {
  // Case 1's URGENT envelope was checked after case 1's ROUTINE one: it
  // keeps its place, and so does everything behind it of that case.
  std::vector<Inbound::Checked> ready = {
      Item(1, "PK-2026-000001", kRoutine), Item(2, "PK-2026-000001", kUrgent),
      Item(3, "PK-2026-000002", kUrgent), Item(4, "PK-2026-000001", kUrgent)};
  EXPECT_THAT(Sequences(TakeAcceptBatch(ready, 32)), ElementsAre(3));
  EXPECT_THAT(Sequences(ready), ElementsAre(1, 2, 4));
  // Then case 1 in its order: nothing URGENT may go ahead of envelope 1.
  EXPECT_THAT(Sequences(TakeAcceptBatch(ready, 32)), ElementsAre(1, 2, 4));
}

TEST(AcceptOrderTest, UrgentBatchesAreBoundedToo) {
  std::vector<Inbound::Checked> ready = {
      Item(1, "PK-2026-000001", kUrgent), Item(2, "PK-2026-000002", kUrgent),
      Item(3, "PK-2026-000003", kRoutine), Item(4, "PK-2026-000004", kUrgent)};
  EXPECT_THAT(Sequences(TakeAcceptBatch(ready, 2)), ElementsAre(1, 2));
  EXPECT_THAT(Sequences(ready), ElementsAre(3, 4));
  EXPECT_THAT(Sequences(TakeAcceptBatch(ready, 2)), ElementsAre(4));
  EXPECT_THAT(Sequences(ready), ElementsAre(3));
}

}  // namespace
}  // namespace casebridge::server
