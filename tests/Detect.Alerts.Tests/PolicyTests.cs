using Detect.Alerts.Policy;
using Detect.Transport;
using static Detect.Alerts.Tests.TestModel;

namespace Detect.Alerts.Tests;

public sealed class PolicyTests
{
    private static readonly DateTime Now = new(2025, 6, 15, 12, 0, 0, DateTimeKind.Utc);

    private static Alert AlertFor(string family, string entity, float score, string severity = "high") => new()
    {
        Id = Alert.MakeId(family, "web-1", entity, T0),
        Host = "web-1",
        HostId = "00000000000000aa",
        Family = family,
        Entity = entity,
        WindowStartNs = T0,
        WindowEndNs = T0 + WindowNs,
        Score = score,
        Severity = severity,
        Model = family + "/v0001",
    };

    [Fact]
    public void Policy_AlertAboveARulesThreshold_YieldsExactlyOneDryRunDecision()
    {
        var engine = new PolicyEngine(clock: () => Now);
        var alert = AlertFor("flow", "203.0.113.7", 2.4f);

        var command = engine.Decide(alert);
        Assert.NotNull(command);
        Assert.True(command!.DryRun, "dry run unless enforcing");
        Assert.Equal(PolicyAction.BlockSource, command.Action);
        Assert.Equal("203.0.113.7/32", command.Target);
        Assert.Equal(600, command.TtlSeconds);
        Assert.Equal("block-flow-sources", command.Rule);
        Assert.Equal(alert.Id, command.AlertId);
        Assert.Equal("00000000000000aa", command.HostId);
        Assert.Contains(alert.Id, command.Reason, StringComparison.Ordinal);
        Assert.True(System.Text.Encoding.UTF8.GetByteCount(command.Reason) <= 120);

        // The same alert again, and another alert of the same source while the block holds: no second decision.
        Assert.Null(engine.Decide(alert));
        Assert.Null(engine.Decide(AlertFor("flow", "203.0.113.7", 3.5f, "critical") with { WindowStartNs = T0 + WindowNs }));
        var stats = engine.Stats;
        Assert.Equal(1, stats.Decisions);
        Assert.Equal(1, stats.DryRunDecisions);
        Assert.Equal(2, stats.Repeats);
        Assert.Equal(1, stats.ByRule["block-flow-sources"]);
    }

    [Fact]
    public void Policy_AlertBelowEveryRule_OrOfAnotherFamily_YieldsNoDecision()
    {
        var engine = new PolicyEngine(clock: () => Now);
        Assert.Null(engine.Decide(AlertFor("flow", "203.0.113.7", 1.9f, "medium")));   // block needs 2.0
        Assert.Null(engine.Decide(AlertFor("syscall", "4242@123456789", 2.9f)));      // kill needs 3.0
        Assert.Equal(0, engine.Stats.Decisions);
        Assert.Equal(2, engine.Stats.AlertsSeen);
    }

    [Fact]
    public void Policy_ActionsHoldForTheirTtl_ThenTheSameTargetMayBeDecidedAgain()
    {
        var now = Now;
        var engine = new PolicyEngine(new PolicyOptions { Enforce = true }, () => now);
        var first = engine.Decide(AlertFor("flow", "203.0.113.7", 2.4f));
        Assert.False(first!.DryRun);
        now += TimeSpan.FromMinutes(9);
        Assert.Null(engine.Decide(AlertFor("flow", "203.0.113.7", 2.4f)));
        now += TimeSpan.FromMinutes(2);
        Assert.NotNull(engine.Decide(AlertFor("flow", "203.0.113.7", 2.4f)));
    }

    [Fact]
    public void Policy_Targets_KillTakesPidAndStartTime_BlockMasksToTheRulesPrefix()
    {
        var config = new PolicyConfig
        {
            Rules =
            [
                new PolicyRule { Name = "subnet", Family = "flow", Action = PolicyAction.BlockSource, MinScore = 1.5f, PrefixV4 = 24, PrefixV6 = 64 },
                new PolicyRule { Name = "kill", Family = "syscall", Action = PolicyAction.Kill, MinScore = 1.5f },
            ],
        };
        var engine = new PolicyEngine(new PolicyOptions { Config = config }, () => Now);
        Assert.Equal("203.0.113.0/24", engine.Decide(AlertFor("flow", "203.0.113.77", 1.6f))!.Target);
        Assert.Equal("2001:db8:1:2::/64", engine.Decide(AlertFor("flow", "2001:db8:1:2:3:4:5:6", 1.6f))!.Target);
        var kill = engine.Decide(AlertFor("syscall", "4242@987654321000", 1.6f))!;
        Assert.Equal(PolicyAction.Kill, kill.Action);
        Assert.Equal("4242", kill.Target);
        Assert.Equal(987654321000, kill.ProcessStartNs);
        Assert.Null(kill.TtlSeconds);
        // With the command name the sensors recorded after the key (FEATURES.md): the same process.
        var named = engine.Decide(AlertFor("syscall", "4343@987654321001 sshd: x@y", 1.6f))!;
        Assert.Equal(("4343", 987654321001L), (named.Target, named.ProcessStartNs));
        // An entity that is no process key cannot be acted on: counted, with the reason.
        Assert.Null(engine.Decide(AlertFor("syscall", "not-a-process", 3f)));
        Assert.Equal(1, engine.Stats.Unusable);
        Assert.Contains("not-a-process", engine.Stats.LastProblem, StringComparison.Ordinal);
    }

    [Fact]
    public void PolicyConfig_FromJson_ReadsRulesInOrder_AndRefusesNonsenseWithAClearError()
    {
        var config = PolicyConfig.Parse("""
            // comments are allowed
            { "rules": [
              { "name": "scanners", "family": "flow", "action": "block-source", "min_score": 2.5, "ttl": "01:00:00" },
              { "name": "isolate", "family": "syscall", "action": "deny-connect", "min_score": 3, "destinations": ["198.51.100.0/24"] },
            ] }
            """);
        Assert.Equal(2, config.Rules.Count);
        Assert.Equal(TimeSpan.FromHours(1), config.Rules[0].Ttl);
        Assert.Equal(PolicyAction.DenyConnect, config.Rules[1].Action);
        Assert.Equal(config.Rules.Select(r => r.Name), PolicyConfig.Parse(config.ToJson()).Rules.Select(r => r.Name));

        var wrongFamily = Assert.Throws<ArgumentException>(() => PolicyConfig.Parse("""{ "rules": [ { "name": "x", "family": "syscall", "action": "block-source" } ] }"""));
        Assert.Contains("block-source acts on flow alerts", wrongFamily.Message, StringComparison.Ordinal);
        var tooLow = Assert.Throws<ArgumentException>(() => PolicyConfig.Parse("""{ "rules": [ { "name": "x", "family": "flow", "action": "block-source", "min_score": 0.5 } ] }"""));
        Assert.Contains("below 1.0", tooLow.Message, StringComparison.Ordinal);
        var typo = Assert.Throws<ArgumentException>(() => PolicyConfig.Parse("""{ "rules": [ { "name": "x", "family": "flow", "action": "block-source", "minscore": 3 } ] }"""));
        Assert.Contains("minscore", typo.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => PolicyConfig.Parse("""{ "rules": [ { "name": "x", "family": "syscall", "action": "deny-connect" } ] }"""));
    }

    [Fact]
    public async Task AlertStage_ScoredScanner_IsLoggedPublished_AndItsCommandGoesToTheTargetHostsSensors()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"detect-stage-{Guid.NewGuid():N}");
        try
        {
            using var transport = Transports.InProcess();
            using var sensorSide = transport.Subscribe(new ConsumerOptions { GroupId = "sensor-aa", Families = [MessageFamily.Policy], OnlyHost = 0xaa, Log = _ => { } });
            using var otherHost = transport.Subscribe(new ConsumerOptions { GroupId = "sensor-bb", Families = [MessageFamily.Policy], OnlyHost = 0xbb, Log = _ => { } });
            using var alertsTopic = transport.Subscribe(new ConsumerOptions { GroupId = "soc", Families = [MessageFamily.Alerts], Log = _ => { } });
            using var log = new AlertLog(Path.Combine(dir, "alerts.jsonl"));
            using var stage = new AlertStage(new AlertEngine(clock: () => Now, hostIdOf: _ => "00000000000000aa"), new PolicyEngine(clock: () => Now), transport, log, publisherHostId: 7);

            var batch = Batch(new Row("10.0.1.1", 0, false), new Row("203.0.113.7", 0, true));
            var alert = Assert.Single(stage.OnScored(batch, Score(batch)));
            await stage.FlushAsync(TimeSpan.FromSeconds(5), TestContext.Current.CancellationToken);

            Assert.Equal(alert.Id, Assert.Single(AlertLog.Read(log.Path, out _)).Id);
            Assert.True(alertsTopic.TryReceive(out var published));
            using (published) Assert.Equal(1, published!.RecordCount);

            Assert.True(sensorSide.TryReceive(out var message), "the target host's sensors get the command");
            using (message)
            {
                Assert.Equal(0xaaUL, message!.HostId);
                PolicyCommand? command = null;
                ControlRecord.ForEach(message.Payload, (type, json) =>
                {
                    Assert.Equal(ControlRecordType.PolicyCommand, type);
                    command = PolicyCommand.FromJson(json);
                });
                Assert.Equal("203.0.113.7/32", command!.Target);
                Assert.True(command.DryRun);
                Assert.Equal(alert.Id, command.AlertId);
            }
            Assert.False(otherHost.TryReceive(out _), "another host's sensors do not");
            Assert.Single(stage.RecentCommands);
            Assert.Equal(1, stage.CommandsPublished);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void AckTracker_CountsAcknowledgementsByStatus_AndSkipsWhatIsNotOne()
    {
        var tracker = new AckTracker();
        var ack = new PolicyAck { CommandId = "c1", Status = PolicyAckStatus.DryRun, Detail = "would block", HostId = "aa", Action = PolicyAction.BlockSource, Target = "203.0.113.7/32" };
        var refused = ack with { CommandId = "c2", Status = PolicyAckStatus.Refused, Detail = "allowlisted" };
        var alertRecord = ControlRecord.Encode(ControlRecordType.Alert, "{}"u8, 0);
        tracker.Apply([.. ack.ToRecord(), .. refused.ToRecord(), .. alertRecord]);
        Assert.Equal(2, tracker.Total);
        Assert.Equal(1, tracker.Count(PolicyAckStatus.DryRun));
        Assert.Equal(1, tracker.Count(PolicyAckStatus.Refused));
        Assert.Equal(1, tracker.Malformed);
        Assert.Equal("c2", tracker.Recent[^1].CommandId);
        Assert.Contains("\"status\":\"dry-run\"", System.Text.Encoding.UTF8.GetString(ack.ToJsonUtf8()), StringComparison.Ordinal);
    }
}
