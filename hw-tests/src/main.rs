//! `callgate-hwtest`: runs the acceptance suite on the real board or the simulated one and
//! prints the report. Exit status: 0 all passed (skips allowed), 1 a check failed, 2 the
//! board could not be opened.

use callgate_board::linux::LinuxBoardConfig;
use callgate_board::lm75::Resolution;
use callgate_hw_tests::bench::{BoardUnderTest, LinuxBench, SimBench, SimFault};
use callgate_hw_tests::checks::{self, Environment};
use callgate_hw_tests::operator::{Operator, Terminal, Unattended};
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "callgate-hwtest",
    version,
    about = "Callgate board acceptance suite"
)]
struct Cli {
    /// Test the simulated board instead of the hardware.
    #[arg(long)]
    simulated: bool,
    /// Build the simulated board with a fault, to see a check fail (repeatable).
    #[arg(long = "simulate-fault", value_enum, requires = "simulated")]
    faults: Vec<FaultArg>,
    /// Ask the operator to confirm what the suite cannot see (LEDs, button).
    #[arg(long)]
    interactive: bool,
    /// GPIO chip of the LEDs and button.
    #[arg(long, default_value = "/dev/gpiochip0")]
    gpio_chip: PathBuf,
    /// Line offsets of the power, cloud, trunks and recording LEDs.
    #[arg(long, value_delimiter = ',', default_value = "17,27,22,23")]
    led_lines: Vec<u32>,
    /// Line offset of the button (active low).
    #[arg(long, default_value_t = 24)]
    button_line: u32,
    /// I2C bus of the temperature sensor.
    #[arg(long, default_value = "/dev/i2c-1")]
    i2c_bus: PathBuf,
    /// LM75 address.
    #[arg(long, default_value = "0x48", value_parser = parse_hex)]
    lm75_address: u8,
    /// ALSA device of the tech audio port (omit to skip the audio check).
    #[arg(long)]
    alsa_device: Option<String>,
    /// sysfs network class directory.
    #[arg(long, default_value = "/sys/class/net")]
    net_sysfs: PathBuf,
    /// The data partition to check.
    #[arg(long, default_value = "/var/lib/callgate")]
    data_dir: PathBuf,
    /// Minimum free space on the data partition, MiB.
    #[arg(long, default_value_t = 512)]
    min_free_mib: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum FaultArg {
    SensorAbsent,
    SensorImplausible,
    ButtonStuck,
}

fn parse_hex(s: &str) -> Result<u8, String> {
    let digits = s.trim_start_matches("0x");
    u8::from_str_radix(digits, 16).map_err(|e| format!("`{s}` is not a hex byte: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut board: Box<dyn BoardUnderTest> = if cli.simulated {
        let faults: Vec<SimFault> = cli
            .faults
            .iter()
            .map(|f| match f {
                FaultArg::SensorAbsent => SimFault::SensorAbsent,
                FaultArg::SensorImplausible => SimFault::SensorImplausible,
                FaultArg::ButtonStuck => SimFault::ButtonStuck,
            })
            .collect();
        Box::new(SimBench::new(&faults))
    } else {
        let Ok(led_lines) = <[u32; 4]>::try_from(cli.led_lines.clone()) else {
            eprintln!("--led-lines needs exactly four line offsets");
            return ExitCode::from(2);
        };
        let config = LinuxBoardConfig {
            gpio_chip: cli.gpio_chip.clone(),
            led_lines,
            button_line: cli.button_line,
            button_active_low: true,
            i2c_bus: cli.i2c_bus.clone(),
            lm75_address: cli.lm75_address,
            lm75_resolution: Resolution::Bits11,
            watchdog_device: None,
        };
        match LinuxBench::open(config) {
            Ok(b) => Box::new(b),
            Err(e) => {
                eprintln!("cannot open the board: {e} (use --simulated without hardware)");
                return ExitCode::from(2);
            }
        }
    };
    let mut operator: Box<dyn Operator> = if cli.interactive {
        Box::new(Terminal::new(std::io::stdin().lock(), std::io::stdout()))
    } else {
        Box::new(Unattended)
    };
    let env = Environment {
        alsa_device: cli.alsa_device,
        net_sysfs: cli.net_sysfs,
        data_dir: cli.data_dir,
        min_free_bytes: cli.min_free_mib << 20,
    };
    let report = checks::run_all(board.as_mut(), operator.as_mut(), &env);
    print!("{}", report.render());
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
