using Detect.Transport;
using static Detect.Alerts.Tests.TestModel;

namespace Detect.Alerts.Tests;

public sealed class AlertEngineTests
{
    private static readonly DateTime Now = new(2025, 6, 15, 12, 0, 0, DateTimeKind.Utc);

    [Fact]
    public void AlertEngine_AnomalousRow_BecomesOneAlert_WithScoreSeverityModelAndExplanation()
    {
        var engine = new AlertEngine(clock: () => Now, hostIdOf: h => h == "web-1" ? "00000000000000aa" : null);
        var batch = Batch(new Row("10.0.1.1", 0, false), new Row("203.0.113.7", 0, true), new Row("10.0.2.2", 0, false));
        var scored = Score(batch);
        Assert.True(scored.Scores[1] >= 2f, $"the scanner scores high ({scored.Scores[1]})");
        Assert.True(scored.Scores[0] < 1f && scored.Scores[2] < 1f, "normal sources stay under the threshold");

        var alert = Assert.Single(engine.Process(batch, scored));
        Assert.Equal("203.0.113.7", alert.Entity);
        Assert.Equal("flow", alert.Family);
        Assert.Equal("web-1", alert.Host);
        Assert.Equal("00000000000000aa", alert.HostId);
        Assert.Equal(T0, alert.WindowStartNs);
        Assert.Equal(scored.Scores[1], alert.Score);
        Assert.Equal(scored.Severities[1].ToString().ToLowerInvariant(), alert.Severity);
        Assert.Equal("flow/v0001", alert.Model);
        Assert.Equal("flow/1", alert.FeatureSchema);
        Assert.Equal(3, alert.Explanation.Count);
        Assert.Contains(alert.Explanation, f => f.Feature == "f_half_open_ratio" && Math.Abs(f.Value - 0.97f) < 1e-6 && f.NormalHigh < 0.1f);
        Assert.Contains("half-open TCP flows (SYN, no reply): 97% of TCP flows", alert.Summary, StringComparison.Ordinal);
        Assert.All(alert.Explanation, f => Assert.Null(f.Detail));

        // With the pipeline's describer, each explained feature says what it was made of.
        var told = new AlertEngine(new AlertOptions { FeatureDetail = (b, r, f) => $"{f} of row {r}" }, clock: () => Now).Process(batch, Score(batch));
        var detailed = Assert.Single(told);
        Assert.Contains("half-open TCP flows (SYN, no reply) (f_half_open_ratio of row 1): 97% of TCP flows", detailed.Summary, StringComparison.Ordinal);
        Assert.Equal("f_half_open_ratio of row 1", detailed.Explanation.Single(f => f.Feature == "f_half_open_ratio").Detail);
        Assert.Equal((Now - DateTime.UnixEpoch).Ticks * 100, alert.CreatedNs);
        Assert.Equal(Alert.MakeId("flow", "web-1", "203.0.113.7", T0), alert.Id);

        var stats = engine.Stats;
        Assert.Equal(3, stats.WindowsScored);
        Assert.Equal(1, stats.Anomalous);
        Assert.Equal(1, stats.Raised);
        var top = engine.TopWindows;
        Assert.Equal("203.0.113.7", top[0].Entity);
        Assert.Contains("f_", top[0].Summary, StringComparison.Ordinal);
    }

    [Fact]
    public void AlertEngine_SameEntityWithinCooldown_IsRaisedOnce_AndTheNextAlertSaysHowManyWereHeldBack()
    {
        var engine = new AlertEngine(new AlertOptions { Cooldown = TimeSpan.FromSeconds(60) }, clock: () => Now);
        var raised = new List<Alert>();
        // Windows 0..9, 10 s apart (this batch's windows end where they start): an alert at 0,
        // held back while the next window starts within 60 s of its end (1-5), again at 6, held back 7-9.
        for (var w = 0; w < 10; w++)
        {
            var batch = Batch(new Row("203.0.113.7", w, true));
            raised.AddRange(engine.Process(batch, Score(batch)));
        }
        Assert.Equal(2, raised.Count);
        Assert.Equal(T0, raised[0].WindowStartNs);
        Assert.Equal(0, raised[0].Suppressed);
        Assert.Equal(T0 + 6 * WindowNs, raised[1].WindowStartNs);
        Assert.Equal(5, raised[1].Suppressed);
        Assert.Equal(10, engine.Stats.Anomalous);
        Assert.Equal(8, engine.Stats.Deduplicated);
        // The same window of another host is another entity.
        var other = Batch(new Row("203.0.113.7", 9, true, Host: "web-2"));
        Assert.Single(engine.Process(other, Score(other)));
    }

    [Fact]
    public void AlertEngine_HigherSeverityWithinCooldown_IsRaisedAgain()
    {
        var engine = new AlertEngine(new AlertOptions { Cooldown = TimeSpan.FromHours(1) }, clock: () => Now);
        // A mild anomaly first (low to high: the first such scale of the scanner), then the same source far worse.
        var (first, firstScores) = new[] { 0.006f, 0.008f, 0.01f, 0.012f, 0.015f, 0.02f }
            .Select(k => Batch(new Row("203.0.113.9", 0, true, Scale: k)))
            .Select(b => (Batch: b, Scores: Score(b)))
            .First(x => x.Scores.Scores[0] >= 1f && x.Scores.Severities[0] < Detect.Models.Calibration.Severity.Critical);
        var worse = Batch(new Row("203.0.113.9", 1, true, Scale: 1f));
        var worseScores = Score(worse);
        Assert.True(worseScores.Severities[0] > firstScores.Severities[0], $"{worseScores.Severities[0]} > {firstScores.Severities[0]}");
        Assert.Single(engine.Process(first, firstScores));
        Assert.Single(engine.Process(worse, worseScores));
        var again = Batch(new Row("203.0.113.9", 2, true, Scale: 1f));
        Assert.Empty(engine.Process(again, Score(again)));
    }

    [Fact]
    public void AlertEngine_BeyondTheMinuteBudget_AlertsAreRateLimited_AndCounted_ThenFlowAgain()
    {
        var now = Now;
        var engine = new AlertEngine(new AlertOptions { MaxAlertsPerMinute = 5 }, clock: () => now);
        var rows = Enumerable.Range(0, 12).Select(i => new Row($"198.51.100.{i}", 0, true)).ToArray();
        var batch = Batch(rows);
        Assert.Equal(5, engine.Process(batch, Score(batch)).Count);
        Assert.Equal(7, engine.Stats.RateLimited);
        now += TimeSpan.FromSeconds(30); // half a minute refills half the budget
        var next = Batch(rows.Select(r => r with { Window = 100 }).ToArray());
        var later = engine.Process(next, Score(next));
        Assert.Equal(2, later.Count);
        Assert.Equal(17, engine.Stats.RateLimited);
        Assert.Equal(12 + 12, engine.Stats.Anomalous);
    }

    [Fact]
    public void AlertEngine_AFloodOfNewEntities_KeepsItsStateWithinTheBound()
    {
        var engine = new AlertEngine(new AlertOptions { MaxTrackedEntities = 50, MaxAlertsPerMinute = 100_000, Cooldown = TimeSpan.FromHours(1) }, clock: () => Now);
        for (var b = 0; b < 10; b++)
        {
            var batch = Batch(Enumerable.Range(0, 40).Select(i => new Row($"198.18.{b}.{i}", b, true)).ToArray());
            Assert.Equal(40, engine.Process(batch, Score(batch)).Count);
        }
        var stats = engine.Stats;
        Assert.Equal(400, stats.Raised);
        Assert.True(stats.EntitiesForgotten >= 350, $"forgot {stats.EntitiesForgotten}");
    }

    [Fact]
    public void AlertRecord_ThroughTheInProcessTransport_ReadsBackEqual()
    {
        var batch = Batch(new Row("203.0.113.7", 0, true));
        var alert = Assert.Single(new AlertEngine(clock: () => Now).Process(batch, Score(batch)));
        using var transport = Transports.InProcess();
        using var consumer = transport.Subscribe(new ConsumerOptions { GroupId = "t", Families = [MessageFamily.Alerts], Log = _ => { } });
        using (var publisher = transport.CreatePublisher(new PublisherOptions { HostId = 42 }))
        {
            Assert.True(publisher.TryAppend(MessageFamily.Alerts, alert.ToRecord()));
            publisher.Flush();
        }
        Assert.True(consumer.TryReceive(out var message));
        using (message)
        {
            Assert.Equal(1, message!.RecordCount);
            Alert? back = null;
            Assert.Equal(1, ControlRecord.ForEach(message.Payload, (type, json) =>
            {
                Assert.Equal(ControlRecordType.Alert, type);
                back = Alert.FromJson(json);
            }));
            Assert.NotNull(back);
            Assert.Equal(alert.ToJson(), back!.ToJson());
            Assert.Equal(alert.Explanation, back.Explanation);
        }
    }

    [Fact]
    public void ControlRecord_DamagedOrForeignBytes_AreRefusedWithTheReason()
    {
        var record = ControlRecord.Encode(ControlRecordType.Alert, """{"a":1}"""u8, 5);
        Assert.Equal(0, record.Length % 8);
        Assert.True(ControlRecord.TryDecode(record, out var type, out var json, out var length, out _));
        Assert.Equal(ControlRecordType.Alert, type);
        Assert.Equal("""{"a":1}""", System.Text.Encoding.UTF8.GetString(json));
        Assert.Equal(record.Length, length);

        Assert.False(ControlRecord.TryDecode(record.AsSpan(0, record.Length - 8), out _, out _, out _, out var error));
        Assert.Contains("record length", error, StringComparison.Ordinal);
        var foreign = (byte[])record.Clone();
        foreign[3] = 1; // a syscall record's type
        Assert.False(ControlRecord.TryDecode(foreign, out _, out _, out _, out error));
        Assert.Contains("not a control record", error, StringComparison.Ordinal);
        var oversized = (byte[])record.Clone();
        oversized[16] = 200; // JSON longer than the record
        Assert.False(ControlRecord.TryDecode(oversized, out _, out _, out _, out error));
        Assert.Contains("JSON length", error, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => ControlRecord.Encode(ControlRecordType.Alert, new byte[ControlRecord.MaxJsonBytes + 1], 0));
    }

    [Fact]
    public void AlertLog_WritesOneJsonLinePerAlert_AndRotatesPastItsSize()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"detect-alertlog-{Guid.NewGuid():N}");
        try
        {
            var path = Path.Combine(dir, "alerts.jsonl");
            var engine = new AlertEngine(new AlertOptions { MaxAlertsPerMinute = 10_000 }, clock: () => Now);
            var batch = Batch(Enumerable.Range(0, 30).Select(i => new Row($"198.51.100.{i}", 0, true)).ToArray());
            var alerts = engine.Process(batch, Score(batch));
            Assert.Equal(30, alerts.Count);
            using (var log = new AlertLog(path, maxBytes: 8192))
            {
                foreach (var a in alerts) log.Write(a);
                Assert.Equal(30, log.Written);
            }
            Assert.True(File.Exists(path + ".1"), "rotated past 8 KiB");
            var back = AlertLog.Read(path + ".1", out var bad1).Concat(AlertLog.Read(path, out var bad2)).ToList();
            Assert.Equal(0, bad1 + bad2);
            // Rotation keeps one older file: the newest alerts are all there, in order, and whole.
            Assert.True(back.Count is > 5 and <= 30, $"{back.Count} alerts in the two files");
            Assert.Equal(alerts.Skip(30 - back.Count).Select(a => a.Id), back.Select(a => a.Id));
            Assert.True(new FileInfo(path).Length < 8192 + 2048);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
