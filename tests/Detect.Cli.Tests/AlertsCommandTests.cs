using System.Text.Json;
using Detect.Alerts;

namespace Detect.Cli.Tests;

/// <summary>`detect alerts`: the analyst's view of the alert log.</summary>
public class AlertsCommandTests
{
    private static Alert Make(string id, string family, string entity, float score, string severity, TimeSpan ago) => new()
    {
        Id = id,
        Host = "web-1",
        Family = family,
        Entity = entity,
        WindowStartNs = (DateTime.UtcNow - ago - TimeSpan.FromSeconds(10) - DateTime.UnixEpoch).Ticks * 100,
        WindowEndNs = (DateTime.UtcNow - ago - DateTime.UnixEpoch).Ticks * 100,
        Score = score,
        Severity = severity,
        Summary = $"summary of {id}",
        Model = family + "/v0001",
    };

    [Fact]
    public void Alerts_FiltersBySeverityAgeFamilyAndEntity_ReadsTheRotatedLogToo_NewestLast()
    {
        var state = Directory.CreateTempSubdirectory("detect-alerts-");
        try
        {
            var path = Path.Combine(state.FullName, "alerts.jsonl");
            using (var rotated = new AlertLog(path + ".1")) rotated.Write(Make("a-old", "syscall", "4242@1 sshd", 2.1f, "high", TimeSpan.FromDays(2)));
            using (var log = new AlertLog(path))
            {
                log.Write(Make("b-low", "syscall", "4243@1 bash", 1.1f, "low", TimeSpan.FromMinutes(20)));
                log.Write(Make("c-flow", "flow", "203.0.113.7", 1.7f, "medium", TimeSpan.FromMinutes(10)));
                log.Write(Make("d-proc", "syscall", "4244@1 nc", 3.2f, "critical", TimeSpan.FromMinutes(5)));
            }
            File.AppendAllText(path, "not json\n");

            string[] Ids(params string[] args)
            {
                var (code, stdout, stderr) = Cli.Run(TimeSpan.FromSeconds(60), ["alerts", "--state", state.FullName, "--json", .. args]);
                Assert.True(code == 0, $"exit {code}: {stderr}");
                Assert.Contains("1 lines that are no alert skipped", stderr, StringComparison.Ordinal);
                return stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("id").GetString()!).ToArray();
            }
            Assert.Equal(["a-old", "b-low", "c-flow", "d-proc"], Ids());
            Assert.Equal(["a-old", "c-flow", "d-proc"], Ids("--min-severity", "medium"));
            Assert.Equal(["b-low", "c-flow", "d-proc"], Ids("--since", "1h"));
            Assert.Equal(["c-flow"], Ids("--family", "flow"));
            Assert.Equal(["d-proc"], Ids("--entity", " nc"));
            Assert.Equal(["c-flow", "d-proc"], Ids("--last", "2"));

            var (tableCode, table, _) = Cli.Run(TimeSpan.FromSeconds(60), "alerts", "--state", state.FullName, "--min-severity", "critical");
            Assert.Equal(0, tableCode);
            Assert.Contains("4244@1 nc", table, StringComparison.Ordinal);
            Assert.Contains("summary of d-proc", table, StringComparison.Ordinal);
            Assert.DoesNotContain("sshd", table, StringComparison.Ordinal);

            Assert.Equal(2, Cli.Run(TimeSpan.FromSeconds(60), "alerts", "--state", state.FullName, "--min-severity", "severe").Code);
            var (missing, _, missingErr) = Cli.Run(TimeSpan.FromSeconds(60), "alerts", "--state", Path.Combine(state.FullName, "nowhere"));
            Assert.Equal(1, missing);
            Assert.Contains("no alert log", missingErr, StringComparison.Ordinal);
        }
        finally
        {
            state.Delete(recursive: true);
        }
    }
}
