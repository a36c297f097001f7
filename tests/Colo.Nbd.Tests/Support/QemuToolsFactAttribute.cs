namespace Colo.Nbd.Tests.Support;

/// <summary>A fact that is skipped (with the reason) unless running as root with qemu-img and qemu-io on PATH.</summary>
public sealed class QemuToolsFactAttribute : FactAttribute
{
    public QemuToolsFactAttribute()
    {
        if (!Environment.IsPrivilegedProcess)
        {
            Skip = "QEMU tool tests need root.";
        }
        else if (FindOnPath("qemu-img") is null || FindOnPath("qemu-io") is null)
        {
            Skip = "qemu-img / qemu-io not found (apt-get install -y qemu-utils).";
        }
    }

    internal static string? FindOnPath(string exe) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, exe)).FirstOrDefault(File.Exists);
}
