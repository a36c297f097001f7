using System.CommandLine;
using Colo.Image;

namespace Colo.Cli;

/// <summary><c>colo image build</c>: builds (or reuses) the guest kernel + initramfs from Debian packages.</summary>
internal static class ImageCommand
{
    public static Command Create()
    {
        var force = new Option<bool>("--force") { Description = "Rebuild even when the cached image's inputs are unchanged" };
        var cache = new Option<string>("--cache") { Description = "Cache root", DefaultValueFactory = _ => GuestImageBuilder.DefaultCacheRoot };
        var build = new Command("build", "Build the guest image (kernel + initramfs with Redis and httpd) unless a cached one has the same inputs.") { force, cache };
        build.SetAction(async (pr, _) =>
        {
            using var loggers = Logging.Create();
            var builder = new GuestImageBuilder(pr.GetValue(cache)!, loggers.CreateLogger("image"));
            try
            {
                var image = pr.GetValue(force) ? await builder.BuildAsync(true, Lifetime.Token) : await builder.EnsureAsync(Lifetime.Token);
                Console.WriteLine($"kernel: {image.KernelPath}");
                Console.WriteLine($"initrd: {image.InitrdPath}");
                return 0;
            }
            catch (ImageBuildException e)
            {
                Console.Error.WriteLine("colo image build: " + e.Message);
                return 1;
            }
        });
        return new Command("image", "Guest image commands.") { build };
    }
}
